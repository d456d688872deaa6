"""Change points spread over a collection's ids, for the partial-snapshot benchmark.

Usage: bench_spread_upsert.py SOCKET COLLECTION DIM COUNT STEP
Upserts COUNT points with ids 0, STEP, 2*STEP, ... (new random vectors, wait=true)
in batches of 100 over the control socket.
"""
import json
import random
import sys

from bench_socket import UnixConnection  # beside this script


def main():
    path, collection = sys.argv[1], sys.argv[2]
    dim, count, step = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    conn = UnixConnection(path)
    rng = random.Random(step)
    ids = [i * step for i in range(count)]
    for start in range(0, len(ids), 100):
        points = [{"id": i, "vector": [rng.uniform(-1, 1) for _ in range(dim)], "payload": {"changed": True}}
                  for i in ids[start:start + 100]]
        conn.request("PUT", f"/collections/{collection}/points?wait=true", json.dumps({"points": points}),
                     {"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            sys.exit(f"upsert failed with HTTP {response.status}")


main()
