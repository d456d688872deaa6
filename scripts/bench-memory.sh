#!/usr/bin/env bash
# Memory against Qdrant (issue 25, bar 6): the same bulk load (LOAD_MB of 1024-dim
# float vectors, by default 1 GiB = 262,144 points, in batches of 256 over gRPC
# with qdrant-client) into Qdrant 1.18.3 and into snapfs, one server at a time in
# one run, each until its collection is green again (the HNSW index built). The
# server's RssAnon is sampled every 0.2 s from its start to 5 s after green; the
# peak and the value at the end are reported, with the load and index times.
# Usage: scripts/bench-memory.sh   (env: LOAD_MB=1024, DIM=1024, BATCH=256,
# QDRANT_BIN, SNAPFS_BIN). Figures go to docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
LOAD_MB=${LOAD_MB:-1024}
DIM=${DIM:-1024}
BATCH=${BATCH:-256}
POINTS=$((LOAD_MB * 1048576 / (DIM * 4)))
qdrant_binary
snapfs_binary
bench_python
work=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-bench-memory.XXXXXX")
server=
cleanup() { stop_sampler; stop_daemon "$server"; rm -rf "$work"; }
sampler=
trap cleanup EXIT

# The load: the same points for both servers (seeded), through the same client.
load() {  # $1: REST URL, $2: gRPC port, $3: api key or ""
  "$PY" - "$1" "$2" "$3" "$POINTS" "$DIM" "$BATCH" <<'PY'
import sys, numpy as np
from qdrant_client import QdrantClient, models
url, grpc, key, n, dim, batch = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None, int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
c = QdrantClient(url=url, grpc_port=grpc, prefer_grpc=True, api_key=key, https=False, timeout=600, check_compatibility=False)
c.create_collection("load", vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE), shard_number=1)
rng = np.random.default_rng(7)
for s in range(0, n, batch):
    k = min(batch, n - s)
    c.upsert("load", points=models.Batch(ids=list(range(s, s + k)), vectors=rng.standard_normal((k, dim), dtype=np.float32).tolist()), wait=True)
PY
}

green() { [ "$(curl -s "$@" | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["status"])' 2>/dev/null)" = green ]; }

# $1: name; the server runs as $server, answering REST at $rest (curl args in
# rest_args), gRPC at $grpc.
measure() {
  sample_rss_anon "$server" "$work/$1.anon" 0.2
  local t0 t1 t2
  t0=$(now)
  load "$rest" "$grpc" "$key"
  t1=$(now)
  for _ in $(seq 1 3600); do green "${rest_args[@]}" && break; sleep 1; done
  t2=$(now)
  sleep 5
  local last; last=$(rss_anon "$server")
  stop_sampler
  local peak; peak=$(sort -n "$work/$1.anon" | tail -1)
  echo "$1: $POINTS x $DIM loaded in $(secs "$t0" "$t1") s, green $(secs "$t1" "$t2") s later; RssAnon peak $((peak / 1024)) MiB, 5 s after green $((last / 1024)) MiB"
  eval "${1}_peak=$peak"
}

# Qdrant (single node, defaults).
start_qdrant "$work/qdrant"
server=$qdrant_pid; grpc=$qgrpc
rest=http://127.0.0.1:$qport; key=; rest_args=("$rest/collections/load")
measure qdrant
stop_daemon "$server"; server=
rm -rf "$work/qdrant"

# snapfs, its REST and gRPC listeners on TCP (the client is the same).
rest_port=$(free_port); grpc=$(free_port)
key=bench-key
"$BIN" serve --data-dir "$work/snapfs" --http "127.0.0.1:$rest_port" --grpc "127.0.0.1:$grpc" --api-key "$key" >"$work/snapfs.log" 2>&1 &
server=$!
wait_daemon "$work/snapfs/snapfs.sock"
rest=http://127.0.0.1:$rest_port; rest_args=(--unix-socket "$work/snapfs/snapfs.sock" http://x/collections/load)
measure snapfs

python3 -c "print(f'snapfs / Qdrant peak RssAnon: {$snapfs_peak / $qdrant_peak:.2f} (bar: <= 1.0)')"
