"""The rows of issue 25's table, side by side in one run (run by scripts/bench-qdrant.sh,
which starts both servers): the same client (qdrant-client over REST for the load,
httpx for the snapshot calls) against Qdrant 1.18.3 and against snapfs, each row the
median of ROUNDS runs, and the ratio snapfs / Qdrant (bar: <= 0.5).

argv: qdrant_url qdrant_pid snapfs_url snapfs_pid snapfs_key points dim rounds
"""
import statistics
import sys
import tempfile
import time

import httpx
import numpy as np
from qdrant_client import QdrantClient, models

q_url, q_pid, s_url, s_pid, s_key = sys.argv[1:6]
points, dim, rounds = int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
servers = {
    "Qdrant": (q_url, int(q_pid), None),
    "snapfs": (s_url, int(s_pid), s_key),
}
rows = {}


def status_kib(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def http(url, key):
    headers = {"api-key": key} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=600)


def timed(work):
    """The seconds `work` took (and what it returned, with `timed_result`)."""
    return timed_result(work)[0]


def timed_result(work):
    t = time.perf_counter()
    result = work()
    return time.perf_counter() - t, result


def row(name, name_of_server, seconds):
    rows.setdefault(name, {})[name_of_server] = seconds


def new_state(h):
    """One point upserted: every snapshot below is of a new state."""
    vec = np.random.default_rng().standard_normal(dim).tolist()
    h.put("/collections/bench/points?wait=true",
          json={"points": [{"id": 10**9 + int(time.time_ns() % 10**6), "vector": vec}]}).raise_for_status()


def stream_to_null(h, path):
    with h.stream("GET", path) as r:
        r.raise_for_status()
        for _ in r.iter_bytes(1 << 20):
            pass


for server, (url, pid, key) in servers.items():
    client = QdrantClient(url=url, api_key=key, https=False, timeout=600, check_compatibility=False, prefer_grpc=False)
    client.create_collection("bench", vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE), shard_number=1)
    rng = np.random.default_rng(1)
    batches = [(list(range(s, min(s + 1000, points))), rng.standard_normal((min(1000, points - s), dim), dtype=np.float32).tolist())
               for s in range(0, points, 1000)]

    def load():
        for ids, vectors in batches:
            client.upsert("bench", points=models.Batch(ids=ids, vectors=vectors), wait=True)
    row("upsert %d x %d in batches of 1,000" % (points, dim), server, timed(load))
    rows.setdefault("RssAnon after load, MiB", {})[server] = status_kib(pid, "RssAnon") / 1024
    h = http(url, key)
    # Settle: every server green (its optimizer done) before the snapshot rows.
    for _ in range(600):
        if h.get("/collections/bench").json()["result"]["status"] == "green":
            break
        time.sleep(1)
    time.sleep(3)
    creates, gets, streams, uploads = [], [], [], []
    for _ in range(rounds):
        new_state(h)
        seconds, name = timed_result(
            lambda: h.post("/collections/bench/snapshots?wait=true").json()["result"]["name"])
        creates.append(seconds)
        gets.append(timed(lambda: stream_to_null(h, f"/collections/bench/snapshots/{name}")))
        new_state(h)
        streams.append(timed(lambda: stream_to_null(h, "/collections/bench/shards/0/snapshot")))
        # Restore by upload of that stored snapshot (Qdrant's priority=snapshot).
        with tempfile.NamedTemporaryFile(suffix=".snapshot") as f:
            with h.stream("GET", f"/collections/bench/snapshots/{name}") as r:
                for chunk in r.iter_bytes(1 << 20):
                    f.write(chunk)
            f.flush()

            def upload():
                with open(f.name, "rb") as body:
                    r = h.post("/collections/bench/snapshots/upload?priority=snapshot&wait=true",
                               files={"snapshot": ("bench.snapshot", body, "application/octet-stream")})
                    r.raise_for_status()
            uploads.append(timed(upload))
        h.delete(f"/collections/bench/snapshots/{name}")
    row("POST /collections/bench/snapshots?wait=true", server, statistics.median(creates))
    row("GET of that snapshot", server, statistics.median(gets))
    row("live shard stream GET …/shards/0/snapshot", server, statistics.median(streams))
    row("restore by upload (priority=snapshot)", server, statistics.median(uploads))
    rows.setdefault("peak RSS over the run (VmHWM), MiB", {})[server] = status_kib(pid, "VmHWM") / 1024

print(f"| {points:,} x {dim}, medians of {rounds} | Qdrant 1.18.3 | snapfs | snapfs / Qdrant |")
print("|---|---|---|---|")
for name, values in rows.items():
    q, s = values["Qdrant"], values["snapfs"]
    unit = "" if "MiB" in name else " s"
    print(f"| {name} | {q:.3f}{unit} | {s:.3f}{unit} | {s / q:.2f} |")
