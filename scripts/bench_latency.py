"""Upsert acknowledgement latency over the control socket.

Usage: bench_latency.py SOCKET COLLECTION DIM COUNT FIRST_ID
Sends COUNT single-point upserts (wait=false) one after another and prints
"p50_ms p99_ms" of the time from sending a request to its answer.
"""
import json
import random
import sys
import time

from bench_socket import UnixConnection  # beside this script


def main():
    path, collection, dim, count, first = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    conn = UnixConnection(path)
    rng = random.Random(first)
    latencies = []
    for i in range(count):
        body = json.dumps({"points": [{"id": first + i, "vector": [rng.uniform(-1, 1) for _ in range(dim)]}]})
        start = time.perf_counter()
        conn.request("PUT", f"/collections/{collection}/points?wait=false", body, {"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - start)
        if response.status != 200:
            sys.exit(f"upsert failed with HTTP {response.status}")
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    print(f"{p50:.3f} {p99:.3f}")


main()
