"""Drive snapfs over gRPC with the official qdrant-client (prefer_grpc=True), as a
Qdrant user would.

Run by tests/integration/grpc.rs with SNAPFS_HTTP_PORT, SNAPFS_GRPC_PORT, SNAPFS_API_KEY and
SNAPFS_OUT set. Exits non-zero (with an assertion message) on any difference from
what Qdrant would answer. Writes to SNAPFS_OUT the snapshot it kept and the points
that snapshot must hold, for the test to restore it through the mount.
"""
import importlib.metadata
import json
import math
import os
import random
import warnings

import grpc
from qdrant_client import QdrantClient, models
from qdrant_client.common.version_check import is_compatible
from qdrant_client.qdrant_remote import QdrantRemote

HOST = "127.0.0.1"
HTTP_PORT = int(os.environ["SNAPFS_HTTP_PORT"])
GRPC_PORT = int(os.environ["SNAPFS_GRPC_PORT"])
KEY = os.environ["SNAPFS_API_KEY"]


def connect(api_key):
    # A key over plain HTTP warns (as against Qdrant); that warning is not the point here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return QdrantClient(
            host=HOST,
            port=HTTP_PORT,
            grpc_port=GRPC_PORT,
            prefer_grpc=True,
            api_key=api_key,
            https=False,
            timeout=60,
            check_compatibility=False,
        )


client = connect(KEY)
remote = client._client

# ---- version: HealthCheck over gRPC, and the client's own compatibility check ----
info = client.info()
assert info.title.startswith("snapfs"), info
assert info.version == "1.18.3", info
client_version = importlib.metadata.version("qdrant-client")
assert is_compatible(client_version, info.version), (client_version, info.version)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    QdrantRemote._check_compatibility(
        remote.rest_uri, remote._rest_headers, remote._rest_args.get("auth"), 60
    )
assert not caught, [str(w.message) for w in caught]


def status_of(call):
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details()
    raise AssertionError("expected the call to fail")


# ---- collections with named vectors, 1 and 3 shards ----
rng = random.Random(14)
TEXT, IMAGE = 8, 4


def vectors_of(i):
    return {
        "text": [rng.uniform(-1, 1) for _ in range(TEXT)],
        "image": [rng.uniform(-1, 1) for _ in range(IMAGE)],
        "words": models.SparseVector(indices=[i % 7, 10 + i % 5], values=[1.0, 0.5 + i / 100]),
    }


def payload_of(i):
    return {
        "n": i,
        "kind": "even" if i % 2 == 0 else "odd",
        "ratio": i / 4,
        "tags": ["t%d" % (i % 3), "all"],
        "nested": {"deep": {"flag": i % 5 == 0}},
        "missing": None,
    }


def close(a, b):
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) for x, y in zip(a, b))


def normalized(v):
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


N = 60
kept = {}
for shards in (1, 3):
    name = "grpc_%d" % shards
    assert not client.collection_exists(name)
    assert client.create_collection(
        collection_name=name,
        vectors_config={
            "text": models.VectorParams(size=TEXT, distance=models.Distance.COSINE),
            "image": models.VectorParams(size=IMAGE, distance=models.Distance.DOT),
        },
        sparse_vectors_config={"words": models.SparseVectorParams(modifier=models.Modifier.IDF)},
        shard_number=shards,
    )
    assert client.collection_exists(name)
    assert name in [c.name for c in client.get_collections().collections]

    vectors = {i: vectors_of(i) for i in range(N)}
    result = client.upsert(
        collection_name=name,
        points=[models.PointStruct(id=i, vector=vectors[i], payload=payload_of(i)) for i in range(N)],
        wait=True,
    )
    assert result.status == models.UpdateStatus.COMPLETED, result

    described = client.get_collection(name)
    assert described.points_count == N, described
    assert described.config.params.shard_number == shards, described.config.params
    assert described.config.params.vectors["text"].size == TEXT
    assert described.config.params.vectors["image"].distance == models.Distance.DOT
    assert described.config.params.sparse_vectors["words"].modifier == models.Modifier.IDF

    assert client.count(collection_name=name, exact=True).count == N
    even = models.Filter(must=[models.FieldCondition(key="kind", match=models.MatchValue(value="even"))])
    assert client.count(collection_name=name, count_filter=even).count == N // 2
    ranged = models.Filter(must=[models.FieldCondition(key="n", range=models.Range(gte=10, lt=20))])
    assert client.count(collection_name=name, count_filter=ranged).count == 10

    records = client.retrieve(collection_name=name, ids=[3, 42], with_payload=True, with_vectors=True)
    assert sorted(r.id for r in records) == [3, 42], records
    for r in records:
        assert r.payload == payload_of(r.id), r.payload
        # Cosine vectors are stored normalized, as Qdrant stores them.
        assert close(r.vector["text"], normalized(vectors[r.id]["text"])), r.vector
        assert close(r.vector["image"], vectors[r.id]["image"]), r.vector
        assert r.vector["words"].indices == vectors[r.id]["words"].indices, r.vector
    only_n = client.retrieve(collection_name=name, ids=[7], with_payload=["n"])
    assert only_n[0].payload == {"n": 7} and only_n[0].vector is None, only_n

    seen, offset = [], None
    while True:
        page, offset = client.scroll(collection_name=name, limit=25, offset=offset, with_payload=True)
        seen.extend(p.id for p in page)
        if offset is None:
            break
    assert sorted(seen) == list(range(N)), seen
    odd, _ = client.scroll(
        collection_name=name,
        scroll_filter=models.Filter(must_not=[models.FieldCondition(key="kind", match=models.MatchValue(value="even"))]),
        limit=100,
    )
    assert sorted(p.id for p in odd) == list(range(1, N, 2)), odd

    found = client.query_points(
        collection_name=name, query=vectors[5]["text"], using="text", limit=3, with_payload=True
    ).points
    assert found[0].id == 5 and math.isclose(found[0].score, 1.0, rel_tol=1e-4), found
    assert found[0].payload == payload_of(5), found[0]
    by_id = client.query_points(collection_name=name, query=5, using="text", limit=3).points
    assert len(by_id) == 3 and 5 not in [p.id for p in by_id], by_id
    filtered = client.query_points(
        collection_name=name, query=vectors[6]["image"], using="image", query_filter=even, limit=5
    ).points
    assert len(filtered) == 5 and all(p.id % 2 == 0 for p in filtered), filtered
    sparse = client.query_points(
        collection_name=name, query=models.SparseVector(indices=[3], values=[1.0]), using="words", limit=100
    ).points
    assert sorted(p.id for p in sparse) == [i for i in range(N) if i % 7 == 3], sparse
    exact = client.query_points(
        collection_name=name, query=vectors[9]["text"], using="text", limit=1,
        search_params=models.SearchParams(exact=True),
    ).points
    assert exact[0].id == 9, exact

    deleted = client.delete(
        collection_name=name, points_selector=models.PointIdsList(points=[58, 59]), wait=True
    )
    assert deleted.status == models.UpdateStatus.COMPLETED
    assert client.count(collection_name=name).count == N - 2
    kept[name] = {i: vectors[i] for i in range(N - 2)}

# ---- collection snapshots: create (wait), list, delete ----
name = "grpc_3"
first = client.create_snapshot(collection_name=name, wait=True)
assert first.name.startswith(name + "-") and first.name.endswith(".snapshot"), first
assert first.size > 0 and len(first.checksum) == 64, first
assert first.creation_time, first
listed = client.list_snapshots(collection_name=name)
assert [s.name for s in listed] == [first.name], listed
assert listed[0].checksum == first.checksum and listed[0].size == first.size, listed

# What the kept snapshot must hold: the points as they are now.
snapshot_points = {}
offset = None
while True:
    page, offset = client.scroll(collection_name=name, limit=50, offset=offset, with_payload=True, with_vectors=True)
    for p in page:
        snapshot_points[str(p.id)] = {
            "payload": p.payload,
            "vector": {
                "text": p.vector["text"],
                "image": p.vector["image"],
                "words": {"indices": p.vector["words"].indices, "values": p.vector["words"].values},
            },
        }
    if offset is None:
        break
assert len(snapshot_points) == N - 2

# A change after the snapshot: the snapshot must not hold it.
client.upsert(
    collection_name=name,
    points=[models.PointStruct(id=1000, vector=vectors_of(1000), payload={"late": True})],
    wait=True,
)
second = client.create_snapshot(collection_name=name)
assert second.name != first.name
client.delete_snapshot(collection_name=name, snapshot_name=second.name, wait=True)
assert [s.name for s in client.list_snapshots(collection_name=name)] == [first.name]

# ---- full-storage snapshots ----
full = client.create_full_snapshot(wait=True)
assert full.name.startswith("full-snapshot-") and full.size > 0 and len(full.checksum) == 64, full
assert [s.name for s in client.list_full_snapshots()] == [full.name]
client.delete_full_snapshot(snapshot_name=full.name, wait=True)
assert client.list_full_snapshots() == []

# ---- bad input: the right status, and nothing changes ----
before = client.count(collection_name="grpc_1").count
code, _ = status_of(lambda: client.count(collection_name="no_such_collection"))
assert code == grpc.StatusCode.NOT_FOUND, code
code, _ = status_of(lambda: client.create_snapshot(collection_name="no_such_collection"))
assert code == grpc.StatusCode.NOT_FOUND, code
code, details = status_of(lambda: client.upsert(
    collection_name="grpc_1",
    points=[models.PointStruct(id=500, vector={"text": [0.1] * (TEXT + 1)}, payload={})],
    wait=True,
))
assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
code, _ = status_of(lambda: client.create_collection(
    collection_name="bad/name", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT)
))
assert code == grpc.StatusCode.INVALID_ARGUMENT, code
code, _ = status_of(lambda: client.create_collection(
    collection_name="grpc_1", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT)
))
assert code == grpc.StatusCode.ALREADY_EXISTS, code
code, _ = status_of(lambda: client.scroll(
    collection_name="grpc_1", order_by="n"
))
assert code == grpc.StatusCode.INVALID_ARGUMENT, code
code, _ = status_of(lambda: connect(None).count(collection_name="grpc_1"))
assert code == grpc.StatusCode.UNAUTHENTICATED, code
code, _ = status_of(lambda: connect("wrong-key").upsert(
    collection_name="grpc_1", points=[models.PointStruct(id=501, vector={"text": [0.1] * TEXT}, payload={})]
))
assert code == grpc.StatusCode.PERMISSION_DENIED, code
assert client.count(collection_name="grpc_1").count == before
assert sorted(c.name for c in client.get_collections().collections) == ["grpc_1", "grpc_3"]
assert client.retrieve(collection_name="grpc_1", ids=[500, 501]) == []

# ---- delete a collection ----
assert client.delete_collection("grpc_1")
assert not client.collection_exists("grpc_1")

with open(os.environ["SNAPFS_OUT"], "w") as out:
    json.dump({"collection": name, "snapshot": first.name, "checksum": first.checksum, "points": snapshot_points}, out)
print("qdrant-client over gRPC: all checks passed")
