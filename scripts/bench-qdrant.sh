#!/usr/bin/env bash
# Issue 25's table, side by side with Qdrant in one run (scripts/bench_qdrant.py has
# the rows): upsert, memory after the load, stored snapshot create, its download, the
# live shard stream and restore by upload, against a Qdrant 1.18.3 single node started
# here from the given binary; each row the median of ROUNDS, the ratio snapfs/Qdrant.
# The servers run one after the other's measurements are done, never at once.
# Usage: scripts/bench-qdrant.sh   (env: POINTS=100000, DIM=128, ROUNDS=5, QDRANT_BIN,
# SNAPFS_BIN). Figures go to docs/BENCHMARKS.md; nothing here is a pass/fail test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
POINTS=${POINTS:-100000}
DIM=${DIM:-128}
ROUNDS=${ROUNDS:-5}
QDRANT_BIN=${QDRANT_BIN:-$PWD/target/qdrant-1.18.3}
[ -x "$QDRANT_BIN" ] || { xz -dc ../shared/bin/qdrant-1.18.3-linux-x86_64.xz >"$QDRANT_BIN.part"; chmod +x "$QDRANT_BIN.part"; mv "$QDRANT_BIN.part" "$QDRANT_BIN"; }
if [ -z "${SNAPFS_BIN:-}" ]; then cargo build --release --quiet; fi
BIN=${SNAPFS_BIN:-$PWD/target/release/snapfs}
PY=$PWD/target/py-venv/bin/python
work=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-bench-qdrant.XXXXXX")
qpid=; spid=
cleanup() { stop_daemon "$qpid"; stop_daemon "$spid"; rm -rf "$work"; }
trap cleanup EXIT

qport=$(free_port); qgrpc=$(free_port)
mkdir -p "$work/qdrant"
(cd "$work/qdrant" && QDRANT__SERVICE__HOST=127.0.0.1 QDRANT__SERVICE__HTTP_PORT=$qport \
  QDRANT__SERVICE__GRPC_PORT=$qgrpc QDRANT__TELEMETRY_DISABLED=true \
  QDRANT__STORAGE__STORAGE_PATH=$work/qdrant/storage QDRANT__STORAGE__SNAPSHOTS_PATH=$work/qdrant/snapshots \
  exec "$QDRANT_BIN" >"$work/qdrant/log" 2>&1) &
qpid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$qport/" >/dev/null && break; sleep 0.1; done

sport=$(free_port)
"$BIN" serve --data-dir "$work/snapfs" --http "127.0.0.1:$sport" --api-key bench-key >"$work/snapfs.log" 2>&1 &
spid=$!
wait_daemon "$work/snapfs/snapfs.sock"

"$PY" scripts/bench_qdrant.py "http://127.0.0.1:$qport" "$qpid" "http://127.0.0.1:$sport" "$spid" bench-key "$POINTS" "$DIM" "$ROUNDS" 2>&1 | grep -v "insecure connection\|warnings.warn"
