"""A hybrid collection through the official qdrant-client over REST, as a Qdrant user
makes one: dense + sparse (idf) vectors and a payload index; upsert, query by the
sparse vector, snapshot, download, restore into a new collection, compare.

Run by tests/integration/qdrant_client.rs with SNAPFS_URL and SNAPFS_API_KEY set.
"""
import os
import random
import tempfile
import urllib.request

from qdrant_client import QdrantClient, models

url = os.environ["SNAPFS_URL"]
key = os.environ["SNAPFS_API_KEY"]
client = QdrantClient(url=url, api_key=key, https=False, timeout=60)

name = "hybrid_py"
client.create_collection(
    collection_name=name,
    vectors_config={"dense": models.VectorParams(size=8, distance=models.Distance.DOT)},
    sparse_vectors_config={"words": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    shard_number=2,
)
client.create_payload_index(
    collection_name=name, field_name="tag", field_schema=models.PayloadSchemaType.KEYWORD, wait=True
)

rng = random.Random(11)
points = []
for i in range(300):
    indices = sorted(rng.sample(range(1000), 4))
    vector = {"words": models.SparseVector(indices=indices, values=[rng.random() + 0.1 for _ in indices])}
    if i % 3:
        vector["dense"] = [rng.uniform(-1, 1) for _ in range(8)]
    points.append(models.PointStruct(id=i, vector=vector, payload={"tag": f"t{i % 5}", "n": i}))
assert client.upsert(collection_name=name, points=points, wait=True).status == models.UpdateStatus.COMPLETED

info = client.get_collection(name)
assert info.points_count == 300, info
assert info.config.params.sparse_vectors["words"].modifier == models.Modifier.IDF, info.config
assert info.payload_schema["tag"].data_type == models.PayloadSchemaType.KEYWORD, info.payload_schema
assert info.payload_schema["tag"].points == 300, info.payload_schema

# A point that has both kinds, and one that lacks the dense vector.
both, sparse_only = client.retrieve(collection_name=name, ids=[1, 3], with_vectors=True)
assert set(both.vector) == {"dense", "words"}, both.vector
assert set(sparse_only.vector) == {"words"}, sparse_only.vector
assert sparse_only.vector["words"].indices == points[3].vector["words"].indices

# Query by the sparse vector of point 7: it finds itself first; a filter narrows.
target = points[7].vector["words"]
hits = client.query_points(collection_name=name, query=target, using="words", limit=5).points
assert hits[0].id == 7, hits
assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
tagged = client.query_points(
    collection_name=name,
    query=target,
    using="words",
    limit=10,
    query_filter=models.Filter(must=[models.FieldCondition(key="tag", match=models.MatchValue(value="t2"))]),
    with_payload=True,
).points
assert tagged and all(h.payload["tag"] == "t2" for h in tagged), tagged

# Snapshot, download, restore into another collection through an upload.
snapshot = client.create_snapshot(collection_name=name, wait=True)
request = urllib.request.Request(f"{url}/collections/{name}/snapshots/{snapshot.name}", headers={"api-key": key})
with tempfile.TemporaryDirectory() as temp:
    path = os.path.join(temp, snapshot.name)
    with urllib.request.urlopen(request) as answer, open(path, "wb") as out:
        out.write(answer.read())
    assert os.path.getsize(path) > 0
    copy = "hybrid_py_copy"
    client.recover_snapshot(collection_name=copy, location=f"{url}/collections/{name}/snapshots/{snapshot.name}",
                            api_key=key, wait=True)
restored = client.get_collection(copy)
assert restored.points_count == 300, restored
assert restored.payload_schema["tag"].points == 300, restored.payload_schema
assert restored.config.params.sparse_vectors["words"].modifier == models.Modifier.IDF
again = client.query_points(collection_name=copy, query=target, using="words", limit=5).points
assert [(h.id, round(h.score, 5)) for h in again] == [(h.id, round(h.score, 5)) for h in hits], (again, hits)
print("qdrant-client hybrid: all checks passed")
