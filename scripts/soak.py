#!/usr/bin/env python3
"""The soak workload (stdlib only), run by scripts/soak.sh against one daemon.

For DURATION seconds, all at once:
- writers (one per disjoint id range, each sequential) upsert and delete points of
  collection `soak` (3 shards, 16-dim), wait=true and wait=false mixed; every
  acknowledged operation is recorded;
- a mount reader copies live collection, shard and full-storage snapshots out of the
  mount, checks them with `sha256sum -c` against the sidecar (read while the file is
  held open, so both are of one state) and `snapfs verify`, and restores some of them
  through `recover/` directories; now and then it reads a live file slowly, past
  the freeze limit (scripts/soak.sh sets it to 5 s), so the rest comes from files
  copied aside into temp_path;
- an HTTP reader downloads live shard snapshots over TCP (plus If-Range ranged
  re-reads), verifies them and restores some into another collection's shard;
- a stored-snapshot loop creates, lists, downloads (HTTP and mount), verifies,
  restores (upload, file:// recover, `snapfs recover`) and deletes (HTTP, `rm`);
- a partial loop takes the manifest of a shard of `pdest`, creates the partial
  snapshot of the same shard of `soak` against it (HTTP or `snapfs partial create`)
  and applies it to `pdest` (HTTP, `snapfs partial apply` or the shard's recover/);
- a sampler reads the daemon's RssAnon every 2 s.

Every archive taken from `soak` is checked for what it holds: restored (or applied)
elsewhere, the points must be, per writer, exactly the writer's state after some
prefix of its operations that lies between the operations acknowledged before the
snapshot was opened and those issued before it answered (a snapshot is one
consistent state holding every update acknowledged before it; readers of one scope
share a view, so a window starts at the oldest open reader of its scope). At the
end, after a
wait=true barrier, `soak` must hold exactly every acknowledged update; temp_path must
be empty; RssAnon must have stayed under the bound. Exit 0 only if nothing failed.
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid

DIM = 16
SHARDS = 3
SRC = "soak"
IDS_PER_WRITER = 400
WRITER_BASE = 100_000  # writer w owns ids [w*BASE + 1, w*BASE + IDS_PER_WRITER]
SENTINEL_BASE = 900_000  # ids of the end barrier, one per shard
# How long a view may outlive the operation that opened it (FUSE release and the
# end of an HTTP stream reach the daemon asynchronously): readers starting meanwhile
# may share it, so their window starts no later than its.
VIEW_LINGER_SECS = 1.0
COLLECTION_BODY = {
    "vectors": {"size": DIM, "distance": "Euclid"},
    "shard_number": SHARDS,
    # A low indexing threshold and a 1 s flush interval: flushes and the optimizer
    # rewrite files while snapshots stream.
    "optimizers_config": {"indexing_threshold": 200, "flush_interval_sec": 1},
}


def vec(pid, ver):
    # Multiples of 1/8 in [-4, 4): exact in f32, compared exactly.
    return [float((pid * 7 + ver * 13 + i * 5) % 64 - 32) / 8.0 for i in range(DIM)]


def payload(w, pid, ver):
    return {"w": w, "id": pid, "v": ver, "pad": "x" * (ver % 23)}


def owner(pid):
    w, rest = divmod(pid, WRITER_BASE)
    if 1 <= rest <= IDS_PER_WRITER:
        return w
    return None


def now():
    return time.strftime("%H:%M:%S")


class Events:
    """A timeline of the writers' operations and the views taken (work/events.log),
    kept with the failing archives for a failure's post-mortem."""

    def __init__(self):
        self.lock = threading.Lock()
        self.file = None
        self.t0 = time.monotonic()

    def open(self, path):
        self.file = open(path, "w", buffering=1 << 16)

    def __call__(self, text):
        if self.file is not None:
            with self.lock:
                self.file.write(f"{time.monotonic() - self.t0:10.4f} {threading.current_thread().name} {text}\n")

    def close(self):
        if self.file is not None:
            with self.lock:
                self.file.close()
                self.file = None


EVENTS = Events()


class CheckError(Exception):
    pass


class ConsistencyError(CheckError):
    """An archive of `soak` that is not one consistent state of the window."""


# ---------------------------------------------------------------- HTTP


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class Api:
    def __init__(self, sock, port, key):
        self.sock, self.port, self.key = sock, port, key

    def _conn(self, via, timeout):
        if via == "unix":
            return UnixConnection(self.sock, timeout)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, via="unix", headers=None, timeout=300, out=None):
        """(status, headers, bytes); with `out` a 2xx body is streamed into that file
        and (status, headers, (size, sha256 hex)) is returned."""
        hdrs = dict(headers or {})
        if via == "tcp":
            hdrs["api-key"] = self.key
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            hdrs.setdefault("content-type", "application/json")
        conn = self._conn(via, timeout)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            rh = {k.lower(): v for k, v in resp.getheaders()}
            if out is not None and 200 <= resp.status < 300 and resp.status != 204:
                h = hashlib.sha256()
                size = 0
                with open(out, "wb") as f:
                    while True:
                        chunk = resp.read(1 << 20)
                        if not chunk:
                            break
                        h.update(chunk)
                        f.write(chunk)
                        size += len(chunk)
                return resp.status, rh, (size, h.hexdigest())
            return resp.status, rh, resp.read()
        finally:
            conn.close()

    def call(self, method, path, body=None, via="unix", timeout=300, headers=None):
        status, _, data = self.request(method, path, body, via, headers=headers, timeout=timeout)
        try:
            value = json.loads(data) if data else None
        except ValueError:
            value = {"raw": data[:500].decode(errors="replace")}
        return status, value

    def ok(self, method, path, body=None, via="unix", timeout=300, what=None):
        status, value = self.call(method, path, body, via, timeout)
        if not 200 <= status < 300:
            raise CheckError(f"{what or method + ' ' + path}: HTTP {status}: {str(value)[:600]}")
        return value


def multipart(data):
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"snapshot\"; "
        f"filename=\"upload.snapshot\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)


# ---------------------------------------------------------------- writers


class Writer(threading.Thread):
    """Sequential upserts and deletes on its own id range; records every operation
    before sending it (`issued`) and its acknowledgement (`acked`, `state`)."""

    def __init__(self, soak, w, via):
        super().__init__(name=f"writer-{w}", daemon=True)
        self.soak, self.w, self.via = soak, w, via
        self.ids = list(range(w * WRITER_BASE + 1, w * WRITER_BASE + IDS_PER_WRITER + 1))
        # ops[k - 1] is operation k: (is_delete, ids); an upsert writes version k.
        self.ops = []
        self.issued = 0
        self.acked = 0
        self.state = {}  # id -> version after the acknowledged operations
        self.lock = threading.Lock()
        self.rng = random.Random(1000 + w)

    def capture_lo(self):
        with self.lock:
            return (self.acked, dict(self.state))

    def capture_hi(self):
        with self.lock:
            return self.issued

    def changes(self, a, b):
        """(id, version or None) of operations a+1..b, as (k, changes) pairs."""
        with self.lock:
            ops = self.ops[a:b]
        for k, (delete, ids) in enumerate(ops, start=a + 1):
            yield k, [(i, None if delete else k) for i in ids]

    def run(self):
        soak, rng = self.soak, self.rng
        try:
            while not soak.stop.is_set():
                seq = len(self.ops) + 1
                wait = rng.random() < 0.5
                if rng.random() < 0.7 or len(self.state) < 20:
                    ids = rng.sample(self.ids, rng.randint(1, 16))
                    body = {"points": [{"id": i, "vector": vec(i, seq), "payload": payload(self.w, i, seq)} for i in ids]}
                    path = f"/collections/{SRC}/points?wait={str(wait).lower()}"
                    method, kind = "PUT", "upsert"
                else:
                    ids = rng.sample(self.ids, rng.randint(1, 8))
                    body = {"points": ids}
                    path = f"/collections/{SRC}/points/delete?wait={str(wait).lower()}"
                    method, kind = "POST", "delete"
                with self.lock:
                    self.ops.append((kind == "delete", tuple(ids)))
                    self.issued += 1
                EVENTS(f"send op {seq} {kind} wait={wait} shards={sorted({soak.route.get(i) for i in ids})}")
                try:
                    status, value = soak.api.call(method, path, body, via=self.via, timeout=180)
                except Exception as e:  # noqa: BLE001 - any failure is the soak's finding
                    soak.fail("writer", f"writer {self.w} op {seq} ({kind}, wait={wait}): {e!r}")
                    return
                if status != 200 or value.get("status") != "ok":
                    soak.fail("writer", f"writer {self.w} op {seq} ({kind}, wait={wait}): HTTP {status}: {str(value)[:400]}")
                    return
                with self.lock:
                    for i in ids:
                        if kind == "delete":
                            self.state.pop(i, None)
                        else:
                            self.state[i] = seq
                    self.acked += 1
                EVENTS(f"ack op {seq}")
                soak.count(f"{kind}_{'wait' if wait else 'nowait'}")
                time.sleep(rng.uniform(0.005, 0.03))
        except Exception:  # noqa: BLE001
            soak.fail("writer", f"writer {self.w} crashed:\n{traceback.format_exc()}")


# ---------------------------------------------------------------- windows


class Window:
    """What a snapshot of `soak` may hold: per writer the state after operation
    `lo` (captured) up to operation `hi`."""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def describe(self):
        return ", ".join(f"w{w}: ops {lo[0]}..{hi}" for w, (lo, hi) in enumerate(zip(self.lo, self.hi)))


class Tracker:
    """Every operation that opens a view of `soak` is wrapped in begin(scope)/end().
    Readers of one scope share a view while it is open (docs/SEMANTICS.md), so a
    reader's window starts at the start of the oldest reader of the same scope that
    is (or may still be) open. Views of different scopes are independent: each one
    freezes what it covers at its own opening.

    With `serialize` (SOAK_SERIALIZE_SCOPES=1) views of different scopes never
    overlap: a diagnostic to check everything else while overlapping scopes are
    known to be broken (see the report printed on such a failure)."""

    def __init__(self, writers, serialize=False, probe=None):
        self.writers = writers
        self.serialize = serialize
        self.probe = probe
        self.cond = threading.Condition()
        self.active = {}  # token -> [scope, lo, expiry or None, start]

    def _expire(self, t):
        for token in [k for k, e in self.active.items() if e[2] is not None and e[2] < t]:
            del self.active[token]

    def begin(self, scope):
        with self.cond:
            while self.serialize:
                t = time.monotonic()
                self._expire(t)
                if all(e[0] == scope for e in self.active.values()):
                    if not self.active and self.probe is not None:
                        # No view is open (nor lingering): no shard may be frozen.
                        frozen = self.probe()
                        if frozen:
                            EVENTS(f"NOTE: {frozen} shards of {SRC} frozen with no view of ours open")
                            print(f"[{now()}] note: {frozen} shards of {SRC} frozen with no view of ours open", flush=True)
                    break
                self.cond.wait(0.05)
            lo = [w.capture_lo() for w in self.writers]
            t = time.monotonic()
            self._expire(t)
            for entry in self.active.values():
                if entry[0] != scope:
                    continue
                for i, l in enumerate(entry[1]):
                    if l[0] < lo[i][0]:
                        lo[i] = l
            token = object()
            self.active[token] = [scope, lo, None, t]
            EVENTS(f"begin view {scope} #{id(token) % 100000} lo={[l[0] for l in lo]} now={[w.acked for w in self.writers]}")
        return token

    def end(self, token):
        hi = [w.capture_hi() for w in self.writers]
        with self.cond:
            entry = self.active[token]
            took = time.monotonic() - entry[3]
            entry[2] = time.monotonic() + VIEW_LINGER_SECS
            window = Window(entry[1], hi)
            self.cond.notify_all()
            EVENTS(f"end view {entry[0]} #{id(token) % 100000} hi={hi}")
        if took > 10:
            print(f"[{now()}] note: an operation holding a view of {SRC} ({entry[0]}) took {took:.1f} s "
                  f"({threading.current_thread().name}; {window.describe()})", flush=True)
        return window


# ---------------------------------------------------------------- the soak


class Soak:
    def __init__(self, args):
        self.args = args
        self.api = Api(args.socket, args.port, args.api_key)
        self.mnt = args.mount
        self.data = args.data_dir
        self.work = args.work
        self.bin = args.bin
        self.pid = args.pid
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {}
        self.failures = []
        self.rss = []  # kB samples
        self.route = {}  # id -> shard
        self.writers = []
        self.tracker = None
        self.seq = 0
        self.env = dict(os.environ, SNAPFS_SOCKET=args.socket)

    # -- bookkeeping
    def count(self, kind, n=1):
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + n

    def fail(self, kind, msg):
        EVENTS(f"FAILURE ({kind}): {msg}")
        with self.lock:
            self.failures.append((kind, msg))
            n = len(self.failures)
        if n <= 50:
            print(f"[{now()}] FAILURE ({kind}): {msg}", flush=True)
        self.count(f"error_{kind}")

    def tmpdir(self, tag):
        with self.lock:
            self.seq += 1
            d = os.path.join(self.work, f"{tag}-{self.seq}")
        os.makedirs(d)
        return d

    def run(self, cmd, what, cwd=None, timeout=300, check=True):
        try:
            p = subprocess.run(cmd, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CheckError(f"{what}: `{' '.join(cmd)}` did not finish in {timeout} s")
        if check and p.returncode != 0:
            raise CheckError(f"{what}: `{' '.join(cmd)}` exited {p.returncode}: {(p.stdout + p.stderr).strip()[:800]}")
        return p

    def verify(self, path, what, checksum=None):
        cmd = [self.bin, "verify", path]
        if checksum:
            cmd += ["--checksum", checksum]
        self.run(cmd, f"snapfs verify of {what}")
        self.count("verify")

    # -- points
    def read_points(self, coll, via="unix"):
        """id -> version of every point of `coll`, each checked whole (vector and
        payload exactly those of its version)."""
        points, offset = {}, None
        while True:
            body = {"limit": 256, "with_payload": True, "with_vector": True}
            if offset is not None:
                body["offset"] = offset
            value = self.api.ok("POST", f"/collections/{coll}/points/scroll", body, via=via, what=f"scroll {coll}")
            for p in value["result"]["points"]:
                pid, pl = p["id"], p.get("payload") or {}
                if pid in points:
                    raise CheckError(f"{coll}: point {pid} returned twice by scroll")
                if pid >= SENTINEL_BASE:
                    points[pid] = "sentinel"
                    continue
                ver = pl.get("v")
                w = owner(pid) if isinstance(pid, int) else None
                if w is None or not isinstance(ver, int):
                    raise CheckError(f"{coll}: unexpected point {json.dumps(p)[:300]}")
                if pl != payload(w, pid, ver) or p.get("vector") != vec(pid, ver):
                    raise CheckError(f"{coll}: point {pid} is not version {ver} whole: {json.dumps(p)[:400]}")
                points[pid] = ver
            offset = value["result"].get("next_page_offset")
            if offset is None:
                return points

    def fits(self, w, window, actual, keep):
        """The operations k in the window after which writer w's state (restricted
        by `keep`) equals `actual`'s; and the closest k with its differing ids."""
        writer = self.writers[w]
        (lo, lo_state), hi = window.lo[w], window.hi[w]
        act = {i: v for i, v in actual.items() if owner(i) == w and keep(i)}
        exp = {i: v for i, v in lo_state.items() if keep(i)}
        bad = {i for i in set(act) | set(exp) if act.get(i) != exp.get(i)}
        matches = [lo] if not bad else []
        best = (len(bad), lo, sorted(bad))
        for k, op in writer.changes(lo, hi):
            for i, v in op:
                if not keep(i):
                    continue
                if v is None:
                    exp.pop(i, None)
                else:
                    exp[i] = v
                if exp.get(i) == act.get(i):
                    bad.discard(i)
                else:
                    bad.add(i)
            if not bad:
                matches.append(k)
            if len(bad) < best[0]:
                best = (len(bad), k, sorted(bad))
        return matches, best, act, exp

    def older_matches(self, w, actual, keep, lo):
        """The operations k < lo after which writer w's state equals `actual`'s (for
        the report of a failure)."""
        act = {i: v for i, v in actual.items() if owner(i) == w and keep(i)}
        exp = {}
        bad = set(act)
        matches = [0] if not bad else []
        for k, op in self.writers[w].changes(0, lo):
            for i, v in op:
                if not keep(i):
                    continue
                if v is None:
                    exp.pop(i, None)
                else:
                    exp[i] = v
                if exp.get(i) == act.get(i):
                    bad.discard(i)
                else:
                    bad.add(i)
            if not bad:
                matches.append(k)
        return matches

    def match_window(self, coll, window, actual, shard=None):
        """Raise unless, per writer, `actual` (restricted to `shard`'s ids) is the
        writer's state after some operation in the window."""
        def keep(i):
            return shard is None or self.route.get(i) == shard

        for w in range(len(self.writers)):
            matches, best, act, _ = self.fits(w, window, actual, keep)
            if matches:
                continue
            _, kbest, diff = best
            lo, hi = window.lo[w][0], window.hi[w]
            ref = {i: v for i, v in window.lo[w][1].items() if keep(i)}
            for _, op in self.writers[w].changes(lo, kbest):
                for i, v in op:
                    if keep(i):
                        if v is None:
                            ref.pop(i, None)
                        else:
                            ref[i] = v
            sample = ", ".join(f"{i} (shard {self.route.get(i)}): holds {act.get(i)} expected {ref.get(i)}" for i in diff[:8])
            detail = ""
            older = self.older_matches(w, actual, keep, lo)
            if older:
                detail += (f"; it is the state after op {older[-1]}, older than the window: updates acknowledged "
                           f"before the snapshot was opened are missing")
            if shard is None:
                # Which state does each shard hold on its own?
                per = []
                for s in range(SHARDS):
                    only = (lambda i, s=s: self.route.get(i) == s)
                    m, b, _, _ = self.fits(w, window, actual, only)
                    if m:
                        per.append(f"shard {s}: ops {m[0]}..{m[-1]}")
                    else:
                        o = self.older_matches(w, actual, only, lo)
                        per.append(f"shard {s}: " + (f"op {o[-1]} (older than the window)" if o else f"none (closest op {b[1]}, {b[0]} ids off)"))
                detail += "; alone, " + "; ".join(per)
            raise ConsistencyError(
                f"{coll}{'' if shard is None else f' shard {shard}'}: writer {w}'s points match no state "
                f"between its ops {lo} and {hi} ({len(act)} points held); closest is after op {kbest} "
                f"with {len(diff)} ids differing: {sample}{detail}"
            )

    def check_restored(self, coll, window, shard=None, what=""):
        actual = self.read_points(coll)
        if shard is None:
            n = self.api.ok("POST", f"/collections/{coll}/points/count", {"exact": True})["result"]["count"]
            if n != len(actual):
                raise CheckError(f"{coll}: count says {n}, scroll returned {len(actual)}")
            # Searches answer too.
            self.api.ok("POST", f"/collections/{coll}/points/query", {"query": vec(1, 1), "limit": 3}, what=f"query {coll}")
        self.match_window(coll, window, actual, shard)
        self.count(f"restore_checked_{what}")

    def recover_dir_clean(self, d):
        # A restore that succeeded leaves nothing in recover/ (no .error).
        deadline = time.monotonic() + 10
        while True:
            left = os.listdir(d)
            if not left:
                return
            if time.monotonic() > deadline:
                raise CheckError(f"{d} still holds {left} 10 s after a successful restore")
            time.sleep(0.2)

    def frozen_shards(self):
        try:
            return self.api.ok("GET", f"/collections/{SRC}")["result"].get("snapfs", {}).get("frozen_shards", 0)
        except Exception as e:  # noqa: BLE001
            return f"unknown ({e})"

    # -- setup
    def setup(self):
        api = self.api
        for c in [SRC, "mshard", "hshard", "pdest", "mcoll"]:
            api.ok("PUT", f"/collections/{c}", COLLECTION_BODY, what=f"create {c}")
        # Learn the routing empirically: restore each shard of a collection holding
        # every id into an empty collection, one shard at a time.
        ids = [i for w in range(self.args.writers) for i in range(w * WRITER_BASE + 1, w * WRITER_BASE + IDS_PER_WRITER + 1)]
        ids += list(range(SENTINEL_BASE, SENTINEL_BASE + 30))
        api.ok("PUT", "/collections/probe", COLLECTION_BODY)
        api.ok("PUT", "/collections/probe2", COLLECTION_BODY)
        for a in range(0, len(ids), 200):
            batch = ids[a:a + 200]
            api.ok("PUT", "/collections/probe/points?wait=true",
                   {"points": [{"id": i, "vector": vec(i, 0), "payload": {"probe": True}} for i in batch]})
        seen = set()
        d = self.tmpdir("probe")
        for s in range(SHARDS):
            path = os.path.join(d, f"s{s}")
            status, _, _ = api.request("GET", f"/collections/probe/shards/{s}/snapshot", via="tcp", out=path)
            if status != 200:
                raise CheckError(f"probe shard {s} stream: HTTP {status}")
            with open(path, "rb") as f:
                body, hdrs = multipart(f.read())
            status, _, data = api.request("POST", f"/collections/probe2/shards/{s}/snapshots/upload?wait=true", body, headers=hdrs)
            if status != 200:
                raise CheckError(f"probe shard {s} upload: HTTP {status}: {data[:300]!r}")
            now_ids = set()
            offset = None
            while True:
                q = {"limit": 1000, "with_payload": False}
                if offset is not None:
                    q["offset"] = offset
                r = api.ok("POST", "/collections/probe2/points/scroll", q)["result"]
                now_ids |= {p["id"] for p in r["points"]}
                offset = r.get("next_page_offset")
                if offset is None:
                    break
            for i in now_ids - seen:
                self.route[i] = s
            seen = now_ids
        if set(self.route) != set(ids):
            raise CheckError(f"routing probe: {len(self.route)} of {len(ids)} ids found in shards")
        per_shard = [sum(1 for v in self.route.values() if v == s) for s in range(SHARDS)]
        self.sentinels = {}
        for i in range(SENTINEL_BASE, SENTINEL_BASE + 30):
            self.sentinels.setdefault(self.route[i], i)
        if len(self.sentinels) != SHARDS:
            raise CheckError(f"no sentinel id for some shard: {self.sentinels}")
        api.ok("DELETE", "/collections/probe")
        api.ok("DELETE", "/collections/probe2")
        shutil.rmtree(d)
        print(f"[{now()}] routing learned: ids per shard {per_shard}", flush=True)

    # -- the mount reader
    def mount_loop(self):
        rng = random.Random(7)
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                if i % 10 == 5:
                    self.mount_slow_reader(rng.randrange(SHARDS))
                elif i % 2 == 1:
                    self.mount_collection(restore=(i % 4 == 1), via_collection_dir=(i % 8 == 1))
                elif i % 6 == 0:
                    self.mount_storage()
                else:
                    self.mount_shard(rng.randrange(SHARDS), restore=(i % 4 == 2))
            except ConsistencyError as e:
                self.fail("mount-consistency", str(e))
            except CheckError as e:
                self.fail("mount", str(e))
            except Exception:  # noqa: BLE001
                self.fail("mount", traceback.format_exc())
            self.stop.wait(rng.uniform(0.2, 0.8))

    def mount_collection(self, restore, via_collection_dir):
        d = self.tmpdir("mount-coll")
        live = os.path.join(self.mnt, "live", f"{SRC}.snapshot")
        copy = os.path.join(d, f"{SRC}.snapshot")
        token = self.tracker.begin("collection")
        try:
            # Held open, the file's view is shared by the sidecar and by cp: one state.
            with open(live, "rb"):
                with open(live + ".sha256") as f:
                    sidecar = f.read()
                self.run(["cp", live, copy], "cp of the live collection snapshot")
        finally:
            window = self.tracker.end(token)
        self.count("mount_live_collection_copy")
        with open(copy + ".sha256", "w") as f:
            f.write(sidecar)
        self.run(["sha256sum", "--quiet", "-c", f"{SRC}.snapshot.sha256"], "sha256sum -c of the live collection copy against its sidecar", cwd=d)
        self.count("mount_sha256_match")
        self.verify(copy, "the live collection copy")
        if restore:
            if via_collection_dir:
                rdir = os.path.join(self.mnt, "collections", "mcoll", "recover")
                target, coll = os.path.join(rdir, "restore.snapshot"), "mcoll"
                with open(target + ".sha256", "w") as f:
                    f.write(sidecar.replace(f"{SRC}.snapshot", "restore.snapshot"))
            else:
                rdir = os.path.join(self.mnt, "recover")
                target, coll = os.path.join(rdir, "mrestore.snapshot"), "mrestore"
            self.run(["cp", copy, target], f"restore through {rdir}")
            self.count(f"mount_restore_{coll}")
            self.recover_dir_clean(rdir)
            self.check_restored(coll, window, what="mount_collection")
        shutil.rmtree(d)

    def mount_shard(self, s, restore):
        d = self.tmpdir("mount-shard")
        name = f"{SRC}-shard-{s}.snapshot"
        live = os.path.join(self.mnt, "collections", SRC, "shards", str(s), name)
        copy = os.path.join(d, name)
        token = self.tracker.begin(("shard", s))
        try:
            self.run(["cp", live, copy], f"cp of live shard {s} snapshot")
        finally:
            window = self.tracker.end(token)
        self.count("mount_live_shard_copy")
        self.verify(copy, f"the live shard {s} copy")
        if restore:
            rdir = os.path.join(self.mnt, "collections", "mshard", "shards", str(s), "recover")
            self.run(["cp", copy, os.path.join(rdir, "shard.snapshot")], f"shard restore through {rdir}")
            self.count("mount_restore_shard")
            self.recover_dir_clean(rdir)
            self.check_restored("mshard", window, shard=s, what="mount_shard")
        shutil.rmtree(d)

    def mount_slow_reader(self, s):
        """Read a live file slowly, past the freeze limit: the rest comes from the
        files copied aside, and must still be the state the sidecar names (a shard
        file has none: its copy must verify)."""
        d = self.tmpdir("mount-slow")
        if s == 0:
            live, scope = os.path.join(self.mnt, "live", f"{SRC}.snapshot"), "collection"
        else:
            live = os.path.join(self.mnt, "collections", SRC, "shards", str(s), f"{SRC}-shard-{s}.snapshot")
            scope = ("shard", s)
        copy = os.path.join(d, os.path.basename(live))
        sidecar = None
        token = self.tracker.begin(scope)
        try:
            with open(live, "rb") as f:
                if s == 0:
                    with open(live + ".sha256") as g:
                        sidecar = g.read().split()[0]
                h = hashlib.sha256()
                with open(copy, "wb") as out:
                    first = f.read(64 << 10)
                    h.update(first)
                    out.write(first)
                    time.sleep(self.args.max_freeze + 1.5)
                    while True:
                        chunk = f.read(1 << 20)
                        if not chunk:
                            break
                        h.update(chunk)
                        out.write(chunk)
        finally:
            self.tracker.end(token)
        self.count("mount_slow_read_past_freeze_limit")
        if sidecar is not None and h.hexdigest() != sidecar:
            raise CheckError(f"slow read of {live} past the freeze limit: sha256 {h.hexdigest()}, its sidecar said {sidecar}")
        self.verify(copy, f"the slow read of {live}")
        shutil.rmtree(d)

    def mount_storage(self):
        d = self.tmpdir("mount-storage")
        copy = os.path.join(d, "storage.snapshot")
        token = self.tracker.begin("full")
        try:
            self.run(["cp", os.path.join(self.mnt, "storage.snapshot"), copy], "cp of the live storage snapshot")
        finally:
            self.tracker.end(token)
        self.count("mount_live_storage_copy")
        self.verify(copy, "the live storage copy")
        shutil.rmtree(d)

    # -- the HTTP reader
    def http_loop(self):
        rng = random.Random(11)
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                self.http_shard(rng.randrange(SHARDS), ranged=(i % 3 == 0), restore=(i % 2 == 0), via=("tcp" if i % 4 != 2 else "unix"), rng=rng)
            except ConsistencyError as e:
                self.fail("http-consistency", str(e))
            except CheckError as e:
                self.fail("http", str(e))
            except Exception:  # noqa: BLE001
                self.fail("http", traceback.format_exc())
            self.stop.wait(rng.uniform(0.2, 0.8))

    def http_shard(self, s, ranged, restore, via, rng):
        d = self.tmpdir("http-shard")
        path = os.path.join(d, f"{SRC}-shard-{s}.snapshot")
        url = f"/collections/{SRC}/shards/{s}/snapshot"
        token = self.tracker.begin(("shard", s))
        try:
            status, hdrs, got = self.api.request("GET", url, via="tcp", out=path)
        finally:
            window = self.tracker.end(token)
        if status != 200:
            raise CheckError(f"GET {url}: HTTP {status}: {got!r:.300}")
        size, digest = got
        if str(size) != hdrs.get("content-length"):
            raise CheckError(f"GET {url}: {size} bytes received, content-length {hdrs.get('content-length')}")
        self.count("http_live_shard_download")
        self.verify(path, f"the live shard {s} download")
        if ranged and size > 2048:
            # The same state gives the same bytes: a ranged re-read that the server
            # answers 206 (If-Range: the state is unchanged) must equal the slice.
            a = rng.randrange(0, size - 1024)
            b = min(size - 1, a + rng.randrange(1, 300_000))
            token = self.tracker.begin(("shard", s))
            try:
                status, _, part = self.api.request("GET", url, via="tcp", headers={"range": f"bytes={a}-{b}", "if-range": hdrs["etag"]})
            finally:
                self.tracker.end(token)
            if status == 206:
                with open(path, "rb") as f:
                    f.seek(a)
                    whole = f.read(b - a + 1)
                if part != whole:
                    raise CheckError(f"GET {url} bytes {a}-{b} (If-Range {hdrs['etag']}): 206 with bytes differing from the full download of that state")
                self.count("http_range_same_bytes")
            elif status == 200:
                self.count("http_range_state_changed")
            else:
                raise CheckError(f"ranged GET {url}: HTTP {status}")
        if restore:
            with open(path, "rb") as f:
                body, h = multipart(f.read())
            q = f"?wait=true&checksum={digest}" if rng.random() < 0.5 else "?wait=true"
            status, _, data = self.api.request("POST", f"/collections/hshard/shards/{s}/snapshots/upload{q}", body, via=via, headers=h)
            if status != 200:
                raise CheckError(f"shard upload into hshard/{s}: HTTP {status}: {data[:400]!r}")
            self.count("http_restore_shard")
            self.check_restored("hshard", window, shard=s, what="http_shard")
        shutil.rmtree(d)

    # -- stored snapshots
    def stored_loop(self):
        rng = random.Random(13)
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                if i % 4 == 0:
                    self.stored_shard(rng.randrange(SHARDS), rng)
                else:
                    self.stored_collection(i, rng)
            except ConsistencyError as e:
                self.fail("stored-consistency", str(e))
            except CheckError as e:
                self.fail("stored", str(e))
            except Exception:  # noqa: BLE001
                self.fail("stored", traceback.format_exc())
            self.stop.wait(rng.uniform(0.3, 1.0))

    def find_stored_file(self, name):
        for root, _, files in os.walk(os.path.join(self.data, "snapshots")):
            if name in files:
                return os.path.join(root, name)
        raise CheckError(f"stored snapshot {name} not found under {self.data}/snapshots")

    def stored_collection(self, i, rng):
        api = self.api
        base = f"/collections/{SRC}/snapshots"
        token = self.tracker.begin("collection")
        try:
            desc = api.ok("POST", f"{base}?wait=true", via="tcp" if i % 2 else "unix", what="create a stored snapshot")["result"]
        finally:
            window = self.tracker.end(token)
        name, checksum, size = desc["name"], desc["checksum"], desc["size"]
        self.count("stored_create")
        deleted = False
        try:
            listed = api.ok("GET", base, what="list stored snapshots")["result"]
            if not any(x["name"] == name and x["checksum"] == checksum and x["size"] == size for x in listed):
                raise CheckError(f"{name} (checksum {checksum}) is not in the list: {listed}")
            self.count("stored_list")
            d = self.tmpdir("stored")
            path = os.path.join(d, name)
            status, _, got = api.request("GET", f"{base}/{name}", via="tcp", out=path)
            if status != 200 or got != (size, checksum):
                raise CheckError(f"download of {name}: HTTP {status}, {got} instead of {(size, checksum)}")
            self.count("stored_download")
            with open(path + ".checksum", "w") as f:
                f.write(checksum)
            self.verify(path, f"stored snapshot {name}")
            # Through the mount too (a plain file there, passthrough).
            mpath = os.path.join(self.mnt, "collections", SRC, "snapshots", name)
            if sha256_file(mpath) != checksum:
                raise CheckError(f"{mpath} read through the mount does not have checksum {checksum}")
            with open(mpath + ".checksum") as f:
                side = (f.read().split() or [""])[0]
            if side != checksum:
                raise CheckError(f"{mpath}.checksum says {side}, the snapshot's is {checksum}")
            self.count("stored_mount_read")
            if i % 2 == 1:
                mode = (i // 2) % 3
                if mode == 0:
                    with open(path, "rb") as f:
                        body, h = multipart(f.read())
                    status, _, data = api.request("POST", f"/collections/hrestore/snapshots/upload?wait=true&checksum={checksum}", body, via="tcp", headers=h)
                    if status != 200:
                        raise CheckError(f"upload of {name} into hrestore: HTTP {status}: {data[:400]!r}")
                    self.count("stored_restore_upload")
                elif mode == 1:
                    location = "file://" + os.path.abspath(self.find_stored_file(name))
                    api.ok("PUT", "/collections/hrestore/snapshots/recover?wait=true", {"location": location, "checksum": checksum}, what=f"recover hrestore from {location}")
                    self.count("stored_restore_file_url")
                else:
                    self.run([self.bin, "recover", "hrestore", path], f"snapfs recover hrestore {name}")
                    self.count("stored_restore_cli")
                self.check_restored("hrestore", window, what="stored")
            if rng.random() < 0.5:
                api.ok("DELETE", f"{base}/{name}", via="tcp", what=f"delete {name}")
                self.count("stored_delete_http")
                deleted = True
            else:
                os.remove(mpath)
                self.count("stored_delete_rm")
                deleted = True
            listed = api.ok("GET", base)["result"]
            if any(x["name"] == name for x in listed):
                raise CheckError(f"{name} is still listed after its delete")
            deadline = time.monotonic() + 10
            while os.path.exists(mpath) or os.path.exists(mpath + ".checksum"):
                if time.monotonic() > deadline:
                    raise CheckError(f"{mpath} or its .checksum still in the mount 10 s after the delete")
                time.sleep(0.2)
            shutil.rmtree(d)
        finally:
            if not deleted:
                # A failed iteration still deletes its snapshot (no leftover noise).
                try:
                    self.api.call("DELETE", f"{base}/{name}")
                except Exception:  # noqa: BLE001
                    pass

    def stored_shard(self, s, rng):
        api = self.api
        base = f"/collections/{SRC}/shards/{s}/snapshots"
        token = self.tracker.begin(("shard", s))
        try:
            desc = api.ok("POST", f"{base}?wait=true", what=f"create a stored snapshot of shard {s}")["result"]
        finally:
            self.tracker.end(token)
        name, checksum, size = desc["name"], desc["checksum"], desc["size"]
        self.count("stored_shard_create")
        listed = api.ok("GET", base)["result"]
        if not any(x["name"] == name and x["checksum"] == checksum for x in listed):
            raise CheckError(f"shard {s}: {name} is not in the list: {listed}")
        d = self.tmpdir("stored-shard")
        path = os.path.join(d, name)
        status, _, got = api.request("GET", f"{base}/{name}", via="tcp", out=path)
        if status != 200 or got != (size, checksum):
            raise CheckError(f"download of shard {s} snapshot {name}: HTTP {status}, {got} instead of {(size, checksum)}")
        self.verify(path, f"stored shard snapshot {name}", checksum=checksum)
        api.ok("DELETE", f"{base}/{name}", what=f"delete {name}")
        if any(x["name"] == name for x in api.ok("GET", base)["result"]):
            raise CheckError(f"shard {s}: {name} still listed after its delete")
        self.count("stored_shard_cycle")
        shutil.rmtree(d)

    # -- partial snapshots
    def partial_loop(self):
        rng = random.Random(17)
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                self.partial(rng.randrange(SHARDS), mode=i % 3, form=("versions" if i % 4 == 0 else "files"))
            except ConsistencyError as e:
                self.fail("partial-consistency", str(e))
            except CheckError as e:
                self.fail("partial", str(e))
            except Exception:  # noqa: BLE001
                self.fail("partial", traceback.format_exc())
            self.stop.wait(rng.uniform(0.3, 1.0))

    def partial(self, s, mode, form):
        api = self.api
        d = self.tmpdir("partial")
        manifest = api.ok("GET", f"/collections/pdest/shards/{s}/snapshot/partial/manifest?format={form}", what="pdest manifest")["result"]
        mpath = os.path.join(d, "manifest.json")
        with open(mpath, "w") as f:
            json.dump(manifest, f)
        archive = os.path.join(d, f"p{s}.snapshot")
        token = self.tracker.begin(("shard", s))
        try:
            if mode == 1:
                self.run([self.bin, "partial", "create", SRC, str(s), "--manifest", mpath, "-o", archive], "snapfs partial create")
                created = os.path.exists(archive) and os.path.getsize(archive) > 0
            else:
                status, _, got = api.request("POST", f"/collections/{SRC}/shards/{s}/snapshot/partial/create",
                                             json.dumps(manifest).encode(), via="tcp",
                                             headers={"content-type": "application/json"}, out=archive)
                if status not in (200, 304):
                    raise CheckError(f"partial create of shard {s} ({form}): HTTP {status}: {got!r:.300}")
                created = status == 200
        finally:
            window = self.tracker.end(token)
        self.count(f"partial_create_{form}")
        if created:
            self.verify(archive, f"partial snapshot of shard {s} ({form})")
            if mode == 0:
                with open(archive, "rb") as f:
                    body, h = multipart(f.read())
                status, _, data = api.request("POST", f"/collections/pdest/shards/{s}/snapshot/partial/recover?wait=true", body, headers=h)
                if status != 200:
                    raise CheckError(f"partial recover into pdest/{s} ({form}): HTTP {status}: {data[:400]!r}")
                self.count("partial_apply_http")
            elif mode == 1:
                self.run([self.bin, "partial", "apply", "pdest", str(s), archive], "snapfs partial apply")
                self.count("partial_apply_cli")
            else:
                rdir = os.path.join(self.mnt, "collections", "pdest", "shards", str(s), "recover")
                self.run(["cp", archive, os.path.join(rdir, "partial.snapshot")], f"partial apply through {rdir}")
                self.recover_dir_clean(rdir)
                self.count("partial_apply_mount")
        else:
            self.count("partial_not_modified")
        self.check_restored("pdest", window, shard=s, what="partial")
        shutil.rmtree(d)

    # -- the sampler
    def sampler(self):
        last_print = time.monotonic()
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    status = f.read()
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                if fields.get("State", "").strip().startswith(("Z", "X")):
                    self.fail("daemon", f"the daemon (pid {self.pid}) died")
                    self.stop.set()
                    return
                self.rss.append(int(fields["RssAnon"].split()[0]))
                if i % 8 == 0:
                    status, _, body = self.api.request("GET", "/metrics", via="tcp")
                    if status != 200 or b"snapfs" not in body:
                        raise CheckError(f"GET /metrics: HTTP {status}")
                    with open(os.path.join(self.mnt, "metrics")) as f:
                        if "snapfs" not in f.read():
                            raise CheckError("mnt/metrics has no snapfs metrics")
                    self.count("metrics_read")
            except FileNotFoundError:
                self.fail("daemon", f"the daemon (pid {self.pid}) is gone")
                self.stop.set()
                return
            except CheckError as e:
                self.fail("sampler", str(e))
            except Exception:  # noqa: BLE001
                self.fail("sampler", traceback.format_exc())
            if time.monotonic() - last_print >= 30:
                last_print = time.monotonic()
                with self.lock:
                    ops = sum(v for k, v in self.counts.items() if not k.startswith("error_"))
                    errors = len(self.failures)
                print(f"[{now()}] {ops} ops, {errors} failures, RssAnon {self.rss[-1] / 1024:.1f} MiB", flush=True)
            self.stop.wait(2)

    # -- the end
    def final_checks(self):
        api = self.api
        # Barrier: a wait=true upsert on every shard is applied after every update
        # acknowledged before it (updates to a shard apply in acknowledgement order).
        api.ok("PUT", f"/collections/{SRC}/points?wait=true",
               {"points": [{"id": i, "vector": vec(i, 0), "payload": {"sentinel": True}} for i in self.sentinels.values()]},
               what="barrier upsert")
        time.sleep(2)
        actual = self.read_points(SRC)
        sentinels = {i for i, v in actual.items() if v == "sentinel"}
        if sentinels != set(self.sentinels.values()):
            raise CheckError(f"barrier points: {sorted(sentinels)} instead of {sorted(self.sentinels.values())}")
        total = 0
        final = Window([w.capture_lo() for w in self.writers], [w.capture_hi() for w in self.writers])
        for w, writer in enumerate(self.writers):
            (acked, state), issued = final.lo[w], final.hi[w]
            if acked != issued:
                # A writer stopped by a failure: whether its last op was applied is
                # unknown, either is accepted here (the failure is reported anyway).
                if not self.fits(w, final, actual, lambda i: True)[0]:
                    raise CheckError(f"writer {w}: acknowledged updates missing or wrong after {acked} ops")
                continue
            held = {i: v for i, v in actual.items() if owner(i) == w}
            total += len(state)
            if held != state:
                diff = sorted(i for i in set(held) | set(state) if held.get(i) != state.get(i))
                sample = ", ".join(f"{i}: holds {held.get(i)} expected {state.get(i)}" for i in diff[:10])
                raise CheckError(f"writer {w}: {len(diff)} acknowledged updates missing or wrong after {acked} ops: {sample}")
        n = api.ok("POST", f"/collections/{SRC}/points/count", {"exact": True})["result"]["count"]
        if n != len(actual):
            raise CheckError(f"count says {n}, scroll returned {len(actual)}")
        print(f"[{now()}] acknowledged updates: all present ({total} points, "
              f"{sum(w.acked for w in self.writers)} ops acknowledged)", flush=True)

    def leftovers(self):
        """temp_path contents, hidden staging entries among the collections, anything
        left in recover/ dirs and stored snapshots not deleted, once idle."""
        def scan():
            left = []
            tmp = os.path.join(self.data, "tmp")
            for root, dirs, files in os.walk(tmp):
                left += [os.path.relpath(os.path.join(root, x), self.data) for x in dirs + files]
            cdir = os.path.join(self.data, "storage", "collections")
            left += [f"storage/collections/{x}" for x in os.listdir(cdir) if x.startswith(".")]
            for root, _, files in os.walk(os.path.join(self.data, "snapshots")):
                left += [os.path.relpath(os.path.join(root, x), self.data) for x in files]
            rdirs = [os.path.join(self.mnt, "recover")]
            for c in os.listdir(os.path.join(self.mnt, "collections")):
                rdirs.append(os.path.join(self.mnt, "collections", c, "recover"))
                sdir = os.path.join(self.mnt, "collections", c, "shards")
                for s in os.listdir(sdir):
                    rdirs.append(os.path.join(sdir, s, "recover"))
            for r in rdirs:
                left += [os.path.relpath(os.path.join(r, x), self.mnt) + " (mount)" for x in os.listdir(r)]
            return sorted(left)

        deadline = time.monotonic() + 60
        while True:
            left = scan()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(1)

    def main(self):
        t0 = time.monotonic()
        EVENTS.open(os.path.join(self.work, "events.log"))
        self.setup()
        via = ["unix", "tcp"]
        self.writers = [Writer(self, w, via[w % 2]) for w in range(self.args.writers)]
        self.tracker = Tracker(self.writers, serialize=os.environ.get("SOAK_SERIALIZE_SCOPES") == "1",
                               probe=self.frozen_shards)
        threads = list(self.writers) + [
            threading.Thread(target=self.mount_loop, name="mount", daemon=True),
            threading.Thread(target=self.http_loop, name="http", daemon=True),
            threading.Thread(target=self.stored_loop, name="stored", daemon=True),
            threading.Thread(target=self.partial_loop, name="partial", daemon=True),
            threading.Thread(target=self.sampler, name="sampler", daemon=True),
        ]
        for t in threads:
            t.start()
        print(f"[{now()}] workload running for {self.args.duration} s", flush=True)
        self.stop.wait(self.args.duration)
        self.stop.set()
        print(f"[{now()}] stopping the workload", flush=True)
        deadline = time.monotonic() + 600
        for t in threads:
            t.join(max(1, deadline - time.monotonic()))
            if t.is_alive():
                self.fail("hang", f"thread {t.name} did not finish within 600 s of the stop")
        ran = time.monotonic() - t0
        EVENTS("workload stopped")
        try:
            self.final_checks()
        except CheckError as e:
            self.fail("acknowledged", str(e))
        except Exception:  # noqa: BLE001
            self.fail("acknowledged", traceback.format_exc())
        left = self.leftovers()
        if left:
            self.fail("leftovers", f"{len(left)} leftovers once idle: {left[:20]}")
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        self.rss.append(int(line.split()[1]))
        except OSError:
            pass
        rss_max = max(self.rss) / 1024 if self.rss else 0.0
        rss_last = self.rss[-1] / 1024 if self.rss else 0.0
        if not self.rss:
            self.fail("rss", "no RssAnon sample")
        elif rss_max >= self.args.max_rss_mib:
            self.fail("rss", f"RssAnon reached {rss_max:.1f} MiB, bound {self.args.max_rss_mib} MiB")

        ops = {k: v for k, v in sorted(self.counts.items()) if not k.startswith("error_")}
        errors = {k: v for k, v in sorted(self.counts.items()) if k.startswith("error_")}
        print("")
        print("==== soak summary ====")
        print(f"duration: {self.args.duration} s of workload ({ran:.0f} s with setup and drain)")
        print(f"writers: {len(self.writers)}, ops acknowledged: {sum(w.acked for w in self.writers)}")
        print(f"ops ({sum(ops.values())} in all):")
        for k, v in ops.items():
            print(f"  {k:32} {v}")
        print(f"errors: {len(self.failures)}" + (f" {errors}" if errors else ""))
        print(f"RssAnon: max {rss_max:.1f} MiB, last {rss_last:.1f} MiB (bound {self.args.max_rss_mib} MiB, {len(self.rss)} samples)")
        print(f"leftovers: {len(left)}" + (f" {left[:20]}" if left else ""))
        if self.failures:
            for w, writer in enumerate(self.writers):
                path = os.path.join(self.work, f"ops-writer-{w}.json")
                with open(path, "w") as f:
                    json.dump({"ids": [writer.ids[0], writer.ids[-1]], "ops": writer.ops, "acked": writer.acked,
                               "issued": writer.issued, "route": {str(k): v for k, v in self.route.items()}}, f)
            print(f"timeline and the writers' operations: {self.work}/events.log, ops-writer-*.json (kept on failure)")
            if any(k.endswith("-consistency") for k, _ in self.failures):
                print("hint: a consistency failure is an archive of soak (restored or applied elsewhere) that is not "
                      "one cut of the update order: a shard older than the window (updates acknowledged before the "
                      "snapshot was opened missing), or shards at different cuts (a batch split). Seen when a view "
                      "freezes a shard that another view still holds frozen: that shard keeps the other view's "
                      "older state. Views of different scopes overlapping do it every time; a view closing (its "
                      "shards thawed one by one) while another opens does it now and then, even with "
                      "SOAK_SERIALIZE_SCOPES=1. events.log in the kept work dir has the timeline.")
            kinds = sorted({k for k, _ in self.failures})
            print(f"workload result: FAIL ({', '.join(kinds)})")
            for kind, msg in self.failures[:10]:
                print(f"  - {kind}: {msg[:1500]}")
            return 1
        print("workload result: PASS")
        return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--socket", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--api-key", default=os.environ.get("SOAK_API_KEY"))
    p.add_argument("--mount", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--bin", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--writers", type=int, default=2)
    p.add_argument("--max-rss-mib", type=float, default=400)
    p.add_argument("--max-freeze", type=float, default=60, help="the daemon's snapshot_max_freeze_secs")
    args = p.parse_args()
    soak = Soak(args)
    try:
        code = soak.main()
    except CheckError as e:
        print(f"soak setup failed: {e}", flush=True)
        code = 1
    except KeyboardInterrupt:
        soak.stop.set()
        print("interrupted", flush=True)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
