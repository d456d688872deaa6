"""A Qdrant Edge shard (the official qdrant-edge-py package) mirrors a snapfs shard
with partial snapshots, as Edge devices mirror a Qdrant server's shard.

Run by tests/integration/partial.rs with SNAPFS_URL, SNAPFS_API_KEY and a work directory in
SNAPFS_WORK; collection `edge` (one shard, 8-dim Cosine vectors) exists with points.
Exits non-zero with an assertion message on any difference.
"""
import json
import os
import urllib.error
import urllib.request

from qdrant_edge import EdgeShard, ScrollRequest

URL = os.environ["SNAPFS_URL"]
KEY = os.environ["SNAPFS_API_KEY"]
WORK = os.environ["SNAPFS_WORK"]


def request(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        URL + path,
        data=data,
        method=method,
        headers={"api-key": KEY, "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def snapfs_points():
    points, offset = {}, None
    while True:
        status, body = request(
            "POST",
            "/collections/edge/points/scroll",
            {"limit": 500, "offset": offset, "with_payload": True, "with_vector": True},
        )
        assert status == 200, body
        result = json.loads(body)["result"]
        for p in result["points"]:
            points[p["id"]] = (p["payload"], p["vector"])
        offset = result["next_page_offset"]
        if offset is None:
            return points


def edge_points(shard):
    records, _ = shard.scroll(ScrollRequest(limit=100_000, with_payload=True, with_vector=True))
    points = {}
    for r in records:
        vector = r.vector
        if isinstance(vector, dict):
            vector = vector[""]
        points[r.id] = (r.payload, list(vector))
    return points


def close(x, y):
    """Same payload, and vectors equal up to the float32 -> JSON -> float round trip."""
    return x[0] == y[0] and len(x[1]) == len(y[1]) and all(abs(p - q) < 1e-6 for p, q in zip(x[1], y[1]))


def same(a, b, what):
    if set(a) != set(b) or any(not close(a[k], b[k]) for k in a):
        only_a = sorted(set(a) - set(b))[:5]
        only_b = sorted(set(b) - set(a))[:5]
        differ = [(k, a[k], b[k]) for k in sorted(set(a) & set(b)) if not close(a[k], b[k])][:3]
        raise AssertionError(f"{what}: {len(a)} vs {len(b)} points; only left {only_a}; only right {only_b}; differ {differ}")


def save(path, content):
    with open(path, "wb") as f:
        f.write(content)


# An Edge shard from a snapfs shard snapshot.
status, full = request("GET", "/collections/edge/shards/0/snapshot")
assert status == 200, full
save(os.path.join(WORK, "full.snapshot"), full)
shard_dir = os.path.join(WORK, "shard")
EdgeShard.unpack_snapshot(os.path.join(WORK, "full.snapshot"), shard_dir)
shard = EdgeShard.load(shard_dir)
same(edge_points(shard), snapfs_points(), "the Edge shard holds snapfs's points")

# Change points in snapfs: new ones, changed ones, deleted ones.
status, body = request(
    "PUT",
    "/collections/edge/points?wait=true",
    {
        "points": [
            {"id": i, "vector": [0.1 * (i % 7 + 1)] * 7 + [1.0], "payload": {"n": i, "changed": True}}
            for i in list(range(0, 40)) + list(range(1000, 1100))
        ]
    },
)
assert status == 200, body
status, body = request(
    "POST", "/collections/edge/points/delete?wait=true", {"points": list(range(100, 120))}
)
assert status == 200, body

# Qdrant's flow: the Edge shard's manifest in, a partial snapshot out, applied by Edge.
manifest = shard.snapshot_manifest()
status, partial = request(
    "POST", "/collections/edge/shards/0/snapshot/partial/create", manifest
)
assert status == 200, (status, partial[:300])
assert len(partial) < len(full) * 2, "a partial snapshot, not more than a full one"
save(os.path.join(WORK, "partial.snapshot"), partial)
shard.update_from_snapshot(os.path.join(WORK, "partial.snapshot"))
want = snapfs_points()
assert len(want) == 300 + 100 - 20, len(want)
same(edge_points(shard), want, "after the partial, the Edge shard holds snapfs's points")

# Nothing changed since: 304.
status, body = request(
    "POST", "/collections/edge/shards/0/snapshot/partial/create", shard.snapshot_manifest()
)
assert status == 304, (status, body[:300])
print("all checks passed")
