#!/usr/bin/env bash
# The daemon's anonymous memory (RssAnon) while bulk-loading points: a fresh daemon
# in a temp dir, `snapfs points generate` of COUNT x 1024-dim points in batches of
# BATCH, RssAnon sampled every 0.1 s; prints the peak, the figure right after the
# load and 5 s later. Used to compare allocators (docs/BENCHMARKS.md).
#
#   scripts/memload.sh BINARY [COUNT]      (env: BATCH, default 250)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
BIN=$1
COUNT=${2:-65536}
work=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-memload.XXXXXX")
export SNAPFS_SOCKET=$work/data/snapfs.sock
"$BIN" serve --data-dir "$work/data" 2>"$work/daemon.log" &
pid=$!
trap 'stop_daemon "$pid"; rm -rf "$work"' EXIT
wait_daemon "$SNAPFS_SOCKET" "" 100 || true
sample_rss_anon "$pid" "$work/anon"
"$BIN" collections create load --dim 1024 >/dev/null
"$BIN" points generate load --count "$COUNT" --dim 1024 --batch "${BATCH:-250}" >/dev/null
after=$(rss_anon); stop_sampler
sleep 5; later=$(rss_anon)
echo "RssAnon: peak $(sort -n "$work/anon" | tail -1) kB during the load, $after kB right after, $later kB 5 s later"
