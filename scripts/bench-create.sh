#!/usr/bin/env bash
# Where the time of `POST /collections/{c}/snapshots?wait=true` goes (issue 25, bar 1),
# side by side in one run on the same 100k x 128 collection shape:
#  - Qdrant 1.18.3 (single node, from the given binary): its create writes the tar,
#    hashes it and renames it into place, and calls no fsync (snapshots_manager.rs
#    store_file);
#  - snapfs as shipped (the archive written, hashed beside the write, fsynced, its
#    directory fsynced);
#  - snapfs under eatmydata (every fsync and sync_file_range a no-op): the same path
#    without durability, to show what durability costs. Never a way to run snapfs.
# Each create follows a one-point upsert (a new state), ROUNDS times; medians.
# Usage: scripts/bench-create.sh   (env: ROUNDS=7, POINTS=100000, DIM=128, QDRANT_BIN,
# SNAPFS_BIN). Figures go to docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ROUNDS=${ROUNDS:-7}
POINTS=${POINTS:-100000}
DIM=${DIM:-128}
command -v eatmydata >/dev/null || apt-get install -y -qq eatmydata >/dev/null
qdrant_binary
snapfs_binary
bench_python
work=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-bench-create.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do stop_daemon "$p"; done; rm -rf "$work"; }
trap cleanup EXIT
median() { python3 -c "import statistics,sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.3f}')" "$@"; }

# Qdrant.
start_qdrant "$work/qdrant"
pids+=("$qdrant_pid")
q=http://127.0.0.1:$qport
curl -sf -X PUT "$q/collections/bench" -H 'content-type: application/json' \
  -d "{\"vectors\":{\"size\":$DIM,\"distance\":\"Cosine\"}}" >/dev/null
"$PY" - "$q" "$qgrpc" "$POINTS" "$DIM" <<'PY'
import sys, numpy as np
from qdrant_client import QdrantClient, models
url, grpc, n, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c = QdrantClient(url=url, grpc_port=grpc, prefer_grpc=True, timeout=300, check_compatibility=False)
rng = np.random.default_rng(1)
for s in range(0, n, 1000):
    k = min(1000, n - s)
    c.upsert("bench", points=models.Batch(ids=list(range(s, s + k)), vectors=rng.standard_normal((k, dim), dtype=np.float32).tolist()), wait=True)
PY

# snapfs twice: as shipped, and under eatmydata.
start_snapfs() {  # $1: name, $2: a wrapper or ""
  mkdir -p "$work/$1"
  SNAPFS_SOCKET=$work/$1/snapfs.sock $2 "$BIN" serve --data-dir "$work/$1/data" --socket "$work/$1/snapfs.sock" >"$work/$1/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do [ -S "$work/$1/snapfs.sock" ] && break; sleep 0.1; done
  SNAPFS_SOCKET=$work/$1/snapfs.sock "$BIN" collections create bench --dim "$DIM" --shards 1 >/dev/null
  SNAPFS_SOCKET=$work/$1/snapfs.sock "$BIN" points generate bench --count "$POINTS" --dim "$DIM" --batch 1000 >/dev/null
}
start_snapfs durable ""
start_snapfs nofsync eatmydata

green() { [ "$(curl -s "$@" | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["status"])')" = green ]; }
for _ in $(seq 1 600); do
  green "$q/collections/bench" && green --unix-socket "$work/durable/snapfs.sock" http://x/collections/bench \
    && green --unix-socket "$work/nofsync/snapfs.sock" http://x/collections/bench && break
  sleep 1
done
sleep 5   # a first freeze waits for a running optimization: let them end

qr=(); dr=(); nr=()
for i in $(seq 1 "$ROUNDS"); do
  body="{\"points\":[{\"id\":$((900000000 + i)),\"vector\":[$(python3 -c "print(','.join(['0.5']*$DIM))")]}]}"
  curl -sf -X PUT "$q/collections/bench/points?wait=true" -H 'content-type: application/json' -d "$body" >/dev/null
  qr+=("$(curl -sf -X POST "$q/collections/bench/snapshots?wait=true" -o /dev/null -w '%{time_total}')")
  for s in durable nofsync; do
    curl -sf --unix-socket "$work/$s/snapfs.sock" -X PUT "http://x/collections/bench/points?wait=true" -H 'content-type: application/json' -d "$body" >/dev/null
  done
  dr+=("$(curl -sf --unix-socket "$work/durable/snapfs.sock" -X POST "http://x/collections/bench/snapshots?wait=true" -o /dev/null -w '%{time_total}')")
  nr+=("$(curl -sf --unix-socket "$work/nofsync/snapfs.sock" -X POST "http://x/collections/bench/snapshots?wait=true" -o /dev/null -w '%{time_total}')")
done
qsize=$(ls -l "$work"/qdrant/snapshots/bench/*.snapshot | awk '{print $5}' | tail -1)
ssize=$(ls -l "$work"/durable/data/snapshots/bench/*.snapshot | awk '{print $5}' | tail -1)
qm=$(median "${qr[@]}"); dm=$(median "${dr[@]}"); nm=$(median "${nr[@]}")
echo "Qdrant create: ${qr[*]} s (median $qm s, $((qsize / 1000000)) MB)"
echo "snapfs create, durable: ${dr[*]} s (median $dm s, $((ssize / 1000000)) MB)"
echo "snapfs create, fsync off (eatmydata): ${nr[*]} s (median $nm s)"
python3 -c "print(f'ratios to Qdrant: durable {$dm/$qm:.2f}, without fsync {$nm/$qm:.2f}; the fsyncs are {($dm-$nm)/$dm*100:.0f}% of the durable create')"
