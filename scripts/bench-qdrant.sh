#!/usr/bin/env bash
# Issue 25's table, side by side with Qdrant in one run (scripts/bench_qdrant.py has
# the rows): upsert, memory after the load, stored snapshot create, its download, the
# live shard stream and restore by upload, against a Qdrant 1.18.3 single node started
# here from the given binary; each row the median of ROUNDS, the ratio snapfs/Qdrant.
# Both servers run for the whole script; each measurement drives one of them while
# the other idles (its memory and page cache stay held).
# Usage: scripts/bench-qdrant.sh   (env: POINTS=100000, DIM=128, ROUNDS=5, QDRANT_BIN,
# SNAPFS_BIN). Figures go to docs/BENCHMARKS.md; nothing here is a pass/fail test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
POINTS=${POINTS:-100000}
DIM=${DIM:-128}
ROUNDS=${ROUNDS:-5}
qdrant_binary
snapfs_binary
bench_python
work=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-bench-qdrant.XXXXXX")
qpid=; spid=
cleanup() { stop_daemon "$qpid"; stop_daemon "$spid"; rm -rf "$work"; }
trap cleanup EXIT

start_qdrant "$work/qdrant"
qpid=$qdrant_pid

sport=$(free_port)
"$BIN" serve --data-dir "$work/snapfs" --http "127.0.0.1:$sport" --api-key bench-key >"$work/snapfs.log" 2>&1 &
spid=$!
wait_daemon "$work/snapfs/snapfs.sock"

"$PY" scripts/bench_qdrant.py "http://127.0.0.1:$qport" "$qpid" "http://127.0.0.1:$sport" "$spid" bench-key "$POINTS" "$DIM" "$ROUNDS" 2>&1 | grep -v "insecure connection\|warnings.warn"
