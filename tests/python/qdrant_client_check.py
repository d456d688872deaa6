"""Drive snapfs with the official qdrant-client, exactly as a Qdrant user would.

Run by tests/integration/qdrant_client.rs with SNAPFS_URL and SNAPFS_API_KEY set; exits non-zero
(with an assertion message) on any difference from what Qdrant would answer.
"""
import math
import os
import random

from qdrant_client import QdrantClient, models

url = os.environ["SNAPFS_URL"]
client = QdrantClient(url=url, api_key=os.environ["SNAPFS_API_KEY"], https=False, timeout=60)

name = "from_python"
assert not client.collection_exists(name)
client.create_collection(
    collection_name=name,
    vectors_config=models.VectorParams(size=16, distance=models.Distance.COSINE),
    shard_number=2,
)
assert client.collection_exists(name)

rng = random.Random(7)
vectors = {i: [rng.uniform(-1, 1) for _ in range(16)] for i in range(200)}
result = client.upsert(
    collection_name=name,
    points=[
        models.PointStruct(id=i, vector=v, payload={"n": i, "kind": "even" if i % 2 == 0 else "odd"})
        for i, v in vectors.items()
    ],
    wait=True,
)
assert result.status == models.UpdateStatus.COMPLETED, result

assert client.count(collection_name=name, exact=True).count == 200

records = client.retrieve(collection_name=name, ids=[3, 150], with_payload=True, with_vectors=True)
assert sorted(r.id for r in records) == [3, 150], records
by_id = {r.id: r for r in records}
assert by_id[3].payload == {"n": 3, "kind": "odd"}, by_id[3].payload
norm = math.sqrt(sum(x * x for x in vectors[3]))
assert all(abs(a - b / norm) < 1e-5 for a, b in zip(by_id[3].vector, vectors[3])), "cosine vectors come back normalized"

hits = client.query_points(collection_name=name, query=vectors[42], limit=5, with_payload=True).points
assert hits[0].id == 42, hits
assert hits[0].score > 0.999, hits[0]
assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

odd_only = client.query_points(
    collection_name=name,
    query=vectors[42],
    limit=10,
    query_filter=models.Filter(must=[models.FieldCondition(key="kind", match=models.MatchValue(value="odd"))]),
    with_payload=True,
).points
assert odd_only and all(h.payload["kind"] == "odd" for h in odd_only), odd_only

page, offset = client.scroll(collection_name=name, limit=150, with_payload=False)
assert len(page) == 150 and offset is not None
rest, end = client.scroll(collection_name=name, limit=150, offset=offset)
assert len(rest) == 50 and end is None

info = client.get_collection(name)
assert info.points_count == 200, info
assert info.config.params.vectors.size == 16

client.delete(collection_name=name, points_selector=models.PointIdsList(points=[0, 1]), wait=True)
assert client.count(collection_name=name).count == 198

assert name in [c.name for c in client.get_collections().collections]
client.delete_collection(name)
assert not client.collection_exists(name)
print("qdrant-client: all checks passed")
