"""Following a Qdrant cluster, measured against what users script today.

A real 3-node Qdrant 1.18.3 cluster on loopback holds a collection of >= 1 GiB of
vectors (3 shards). snapfs follows it into a restic repository. Two workloads, each
followed by one round: (a) 1% new points appended, (b) 1% of the points updated,
spread over the ids. For each round, side by side in one run:

- snapfs: bytes pulled over the network (partial snapshots), seconds, bytes the round
  added to its repository (on disk), peak disk used on the Qdrant nodes meanwhile;
- the script users run today: a full shard snapshot of every shard downloaded
  (`GET /collections/{c}/shards/{s}/snapshot` from the node holding it), bytes and
  seconds, and the node disk a stored snapshot takes (`POST .../shards/{s}/snapshots`);
- `restic backup` of those full shard archives into a repository of its own: bytes
  it added on disk for the same change.

Usage: bench_follow.py SNAPFS_BIN QDRANT_BIN WORKDIR [POINTS] [DIM]
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
from qdrant_client import QdrantClient, models

SNAPFS, QDRANT, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
POINTS = int(sys.argv[4]) if len(sys.argv) > 4 else 262_144
DIM = int(sys.argv[5]) if len(sys.argv) > 5 else 1024
CHANGE = POINTS // 100
procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=600):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def unix_http(sock, method, path, timeout=3600):
    out = subprocess.run(
        ["curl", "-sf", "-m", str(timeout), "--unix-socket", sock, "-X", method, f"http://x{path}"],
        capture_output=True, check=True)
    return json.loads(out.stdout)


def du(path):
    if not os.path.exists(path):
        return 0
    return int(subprocess.run(["du", "-sb", path], capture_output=True, text=True).stdout.split()[0])


class Peak:
    """Samples the disk used under some paths every 100 ms; .peak is the largest sum."""

    def __init__(self, paths):
        self.paths, self.peak, self.stop = paths, 0, False
        self.base = sum(du(p) for p in paths)
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, sum(du(p) for p in self.paths) - self.base)
            time.sleep(0.1)

    def end(self):
        self.stop = True
        self.thread.join()
        return self.peak


def start_cluster():
    nodes = []
    for i in range(3):
        home = os.path.join(WORK, f"node{i}")
        os.makedirs(home)
        http_port, grpc_port, p2p = free_port(), free_port(), free_port()
        env = dict(os.environ,
                   QDRANT__CLUSTER__ENABLED="true", QDRANT__SERVICE__HOST="127.0.0.1",
                   QDRANT__SERVICE__HTTP_PORT=str(http_port), QDRANT__SERVICE__GRPC_PORT=str(grpc_port),
                   QDRANT__CLUSTER__P2P__PORT=str(p2p), QDRANT__TELEMETRY_DISABLED="true",
                   QDRANT__STORAGE__STORAGE_PATH=f"{home}/storage",
                   QDRANT__STORAGE__SNAPSHOTS_PATH=f"{home}/snapshots")
        args = [QDRANT, "--uri", f"http://127.0.0.1:{p2p}"]
        if i > 0:
            args += ["--bootstrap", f"http://127.0.0.1:{nodes[0]['p2p']}"]
        log = open(os.path.join(home, "log"), "w")
        procs.append(subprocess.Popen(args, cwd=home, env=env, stdout=log, stderr=log))
        node = {"http": http_port, "grpc": grpc_port, "p2p": p2p, "home": home,
                "url": f"http://127.0.0.1:{http_port}"}
        nodes.append(node)
        deadline = time.time() + 60
        while True:
            try:
                http("GET", node["url"] + "/")
                break
            except Exception:
                assert time.time() < deadline, "qdrant did not start"
                time.sleep(0.2)
    deadline = time.time() + 60
    while len(http("GET", nodes[0]["url"] + "/cluster")["result"]["peers"]) < 3:
        assert time.time() < deadline, "the cluster did not form"
        time.sleep(0.2)
    for node in nodes:
        node["peer"] = http("GET", node["url"] + "/cluster")["result"]["peer_id"]
    return nodes


def settled(base):
    """Wait until the optimizer is done with the collection (green 3 times in a row, 1 s
    apart): a round then sees the workload's whole effect, optimizations included."""
    streak = 0
    while streak < 3:
        info = http("GET", base + "/collections/big")["result"]
        streak = streak + 1 if info["status"] == "green" else 0
        time.sleep(1)


def vectors(n, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, DIM), dtype=np.float32)


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    nodes = start_cluster()
    base = nodes[0]["url"]
    http("PUT", base + "/collections/big", {
        "vectors": {"size": DIM, "distance": "Dot", "on_disk": True},
        "shard_number": 3, "replication_factor": 1,
        # No HNSW graph (m=0) keeps the load fast on a small machine, while the
        # optimizer still turns full segments into non-appendable ones, as in a real
        # deployment: new points then go to a small appendable segment.
        "hnsw_config": {"m": 0}})
    client = QdrantClient(url=base, grpc_port=nodes[0]["grpc"], prefer_grpc=True, timeout=600)
    t0 = time.time()
    batch = 1024
    for start in range(0, POINTS, batch):
        n = min(batch, POINTS - start)
        client.upsert("big", points=models.Batch(
            ids=list(range(start, start + n)), vectors=vectors(n, start).tolist(),
            payloads=[{"n": i} for i in range(start, start + n)]), wait=False)
    client.count("big", exact=True)
    settled(base)
    print(f"loaded {POINTS} x {DIM} ({POINTS * DIM * 4 / 2**30:.2f} GiB of vectors) in {time.time() - t0:.0f} s")
    placement = http("GET", base + "/collections/big/cluster")["result"]
    holder = {s["shard_id"]: nodes[0] for s in placement["local_shards"]}
    by_peer = {n["peer"]: n for n in nodes}
    for s in placement["remote_shards"]:
        holder[s["shard_id"]] = by_peer[s["peer_id"]]

    # snapfs, following the cluster into a repository.
    repo, data, sock = f"{WORK}/snapfs-repo", f"{WORK}/snapfs-data", f"{WORK}/snapfs.sock"
    os.makedirs(data)
    with open(f"{WORK}/password", "w") as f:
        f.write("bench")
    urls = ", ".join(f'"{n["url"]}"' for n in nodes)
    with open(f"{WORK}/snapfs.yaml", "w") as f:
        f.write(f"storage:\n  snapshots_config:\n    snapshots_storage: repository\n"
                f"    repository:\n      location: {repo}\n      password_file: {WORK}/password\n"
                f"follow:\n  clusters:\n    - name: prod\n      nodes: [{urls}]\n"
                f"      collections: [big]\n")
    log = open(f"{WORK}/snapfs.log", "w")
    procs.append(subprocess.Popen([SNAPFS, "serve", "--data-dir", data, "--socket", sock,
                                   "--config", f"{WORK}/snapfs.yaml"], stdout=log, stderr=log))
    deadline = time.time() + 60
    while not os.path.exists(sock):
        assert time.time() < deadline, "snapfs did not start"
        time.sleep(0.1)
    time.sleep(0.5)

    # restic, backing up the full shard archives the loop downloads.
    restic_repo = f"{WORK}/restic-repo"
    renv = dict(os.environ, RESTIC_REPOSITORY=restic_repo, RESTIC_PASSWORD_FILE=f"{WORK}/password")
    subprocess.run(["restic", "init"], env=renv, capture_output=True, check=True)
    archives = f"{WORK}/archives"
    node_dirs = [n["home"] for n in nodes]
    snapshot_dirs = [n["home"] + "/snapshots" for n in nodes]

    def snapfs_round():
        before = du(repo)
        peak, peak_snap = Peak(node_dirs), Peak(snapshot_dirs)
        t = time.time()
        report = unix_http(sock, "POST", "/snapfs/clusters/prod/round?wait=true")["result"]
        took = time.time() - t
        node_disk, snap_disk = peak.end(), peak_snap.end()
        assert report["stale"] == 0, report
        return {"moved": report["bytes_received"], "seconds": took,
                "added": du(repo) - before, "node_disk": node_disk, "snap_disk": snap_disk,
                "applied": report["applied"], "unchanged": report["unchanged"]}

    def full_loop():
        shutil.rmtree(archives, ignore_errors=True)
        os.makedirs(archives)
        moved, t = 0, time.time()
        streamed = Peak(node_dirs)
        for shard, node in sorted(holder.items()):
            path = f"{archives}/big-shard-{shard}.snapshot"
            subprocess.run(["curl", "-sf", "-o", path,
                            f"{node['url']}/collections/big/shards/{shard}/snapshot"], check=True)
            moved += os.path.getsize(path)
        took = time.time() - t
        stream_disk = streamed.end()
        # What a stored full snapshot costs the node's disk while it is kept.
        peak, peak_snap = Peak(node_dirs), Peak(snapshot_dirs)
        for shard, node in sorted(holder.items()):
            name = http("POST", f"{node['url']}/collections/big/shards/{shard}/snapshots")["result"]["name"]
            http("DELETE", f"{node['url']}/collections/big/shards/{shard}/snapshots/{name}")
        node_disk, snap_disk = peak.end(), peak_snap.end()
        before = du(restic_repo)
        r = time.time()
        subprocess.run(["restic", "backup", "--host", "bench", archives], env=renv,
                       capture_output=True, check=True)
        restic_s = time.time() - r
        return {"moved": moved, "seconds": took, "added": du(restic_repo) - before,
                "node_disk": node_disk, "snap_disk": snap_disk, "restic_s": restic_s,
                "stream_disk": stream_disk}

    def show(what, ours, theirs):
        print(f"{what}:")
        print(f"  snapfs round (pull + generation in its repository): moved {ours['moved'] / 1e6:.1f} MB "
              f"in {ours['seconds']:.2f} s ({ours['applied']} shards applied, {ours['unchanged']} unchanged), "
              f"added {ours['added'] / 1e6:.1f} MB to its repository; Qdrant nodes' disk meanwhile: "
              f"snapshots dirs +{ours['snap_disk'] / 1e6:.1f} MB peak, whole node dirs +{ours['node_disk'] / 1e6:.1f} MB")
        print(f"  full shard snapshots of every shard: moved {theirs['moved'] / 1e6:.1f} MB in "
              f"{theirs['seconds']:.2f} s (node dirs +{theirs['stream_disk'] / 1e6:.1f} MB peak while streaming), "
              f"restic backup of them {theirs['restic_s']:.2f} s and "
              f"{theirs['added'] / 1e6:.1f} MB added; a stored one on the nodes: snapshots dirs "
              f"+{theirs['snap_disk'] / 1e6:.1f} MB peak, whole node dirs +{theirs['node_disk'] / 1e6:.1f} MB")
        total = theirs['seconds'] + theirs['restic_s']
        print(f"  ratios snapfs/reference: bytes moved {ours['moved'] / max(theirs['moved'], 1):.3f}, "
              f"time {ours['seconds'] / total:.2f} (of download + restic backup), "
              f"added to the repository {ours['added'] / max(theirs['added'], 1):.2f}")

    show("initial (everything)", snapfs_round(), full_loop())

    # (a) 1% new points appended.
    client.upsert("big", points=models.Batch(
        ids=list(range(POINTS, POINTS + CHANGE)), vectors=vectors(CHANGE, 10**9).tolist(),
        payloads=[{"n": i} for i in range(POINTS, POINTS + CHANGE)]), wait=True)
    settled(base)
    show(f"(a) {CHANGE} points appended (1%)", snapfs_round(), full_loop())

    # (b) 1% of the points updated, spread over the ids.
    rng = np.random.default_rng(7)
    ids = sorted(int(i) for i in rng.choice(POINTS, CHANGE, replace=False))
    for start in range(0, len(ids), 1024):
        chunk = ids[start:start + 1024]
        client.upsert("big", points=models.Batch(
            ids=chunk, vectors=vectors(len(chunk), 2 * 10**9 + start).tolist(),
            payloads=[{"n": i, "updated": True} for i in chunk]), wait=True)
    settled(base)
    show(f"(b) {CHANGE} points updated, spread over the ids (1%)", snapfs_round(), full_loop())
    settled(base)
    unchanged = snapfs_round()
    print(f"a round with nothing changed: moved {unchanged['moved']} bytes in {unchanged['seconds']:.2f} s, "
          f"added {unchanged['added'] / 1e3:.0f} kB")


try:
    main()
finally:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
