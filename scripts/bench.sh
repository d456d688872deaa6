#!/usr/bin/env bash
# snapfs benchmark. Measures, in one run, against a reference measured in the same run:
#   - upsert throughput: POINTS x DIM random points in batches of BATCH over the socket,
#     with `snapfs points generate` (client-side generation and JSON included);
#     reference: `cp` of a plain file holding the same raw vector bytes (POINTS*DIM*4);
#   - the daemon's peak RSS (VmHWM) over the run.
# Usage: scripts/bench.sh            (POINTS=100000 DIM=128 BATCH=1000 by default)
# Figures go to docs/BENCHMARKS.md; never used as a pass/fail test.
set -euo pipefail
cd "$(dirname "$0")/.."
POINTS=${POINTS:-100000}
DIM=${DIM:-128}
BATCH=${BATCH:-1000}

cargo build --release --quiet
BIN=$PWD/target/release/snapfs
work=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-bench.XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

export SNAPFS_SOCKET=$work/data/snapfs.sock
SNAPFS_LOG=warn "$BIN" serve --data-dir "$work/data" 2>"$work/daemon.log" &
pid=$!
for _ in $(seq 1 600); do [ -S "$SNAPFS_SOCKET" ] && break; sleep 0.1; done
"$BIN" collections create bench --dim "$DIM" --distance Cosine >/dev/null

now() { date +%s.%N; }
t0=$(now)
"$BIN" points generate bench --count "$POINTS" --dim "$DIM" --batch "$BATCH" >/dev/null
t1=$(now)
count=$("$BIN" points count bench)
[ "$count" = "$POINTS" ] || { echo "expected $POINTS points, found $count"; exit 1; }

# Reference: copy the same number of raw vector bytes as a plain file (warm cache).
head -c $((POINTS * DIM * 4)) /dev/urandom >"$work/raw.bin"
cat "$work/raw.bin" >/dev/null
r0=$(now)
cp "$work/raw.bin" "$work/raw-copy.bin"
r1=$(now)

peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
python3 - "$t0" "$t1" "$r0" "$r1" "$POINTS" "$DIM" "$BATCH" "$peak_kib" <<'PY'
import sys
t0, t1, r0, r1 = map(float, sys.argv[1:5])
points, dim, batch, peak_kib = map(int, sys.argv[5:9])
upsert = t1 - t0
ref = max(r1 - r0, 1e-9)
raw_mb = points * dim * 4 / 1e6
print(f"upsert: {points} x {dim}-dim points, batches of {batch}: {upsert:.2f} s, "
      f"{points / upsert:,.0f} points/s ({raw_mb / upsert:.1f} MB/s of raw vectors)")
print(f"reference cp of {raw_mb:.0f} MB raw vector bytes: {r1 - r0:.3f} s; upsert/cp time ratio: {upsert / ref:.1f}x")
print(f"daemon peak RSS (VmHWM): {peak_kib / 1024:.0f} MiB")
PY
