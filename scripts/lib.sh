# Shell functions the bench, probe and soak scripts share: timers, memory sampling,
# a free port, and starting/stopping a daemon. Sourced, never run:
#
#   . "$(dirname "$0")/lib.sh"
#
# Nothing here sets shell options or traps; each script keeps its own. Every function
# is safe under `set -euo pipefail`.

# Now, in seconds since the epoch with nanoseconds (for `secs`).
now() { date +%s.%N; }

# The seconds from stamp $1 to stamp $2 (two `now`s), three decimals.
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }

# A free loopback TCP port.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The anonymous resident memory (RssAnon, kB) of process $1 (default: $pid).
rss_anon() { awk '/RssAnon/ {print $2}' "/proc/${1:-$pid}/status"; }

# Sample `rss_anon` of process $1 every $3 seconds (default 0.1) into file $2 for as
# long as it runs, in the background; the sampler's pid is left in $sampler.
sample_rss_anon() {
  local interval=${3:-0.1}
  ( while kill -0 "$1" 2>/dev/null; do rss_anon "$1"; sleep "$interval"; done ) >"$2" &
  sampler=$!
}

# Stop the sampler `sample_rss_anon` started.
stop_sampler() { kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; }

# Is $1 a mount point right now? (Settle for the scripts' own temp dirs: no spaces.)
mounted() { grep -q " $1 " /proc/mounts; }

# Wait until the daemon's socket $1 exists and, when $2 is given, the mount $2 is
# there: at most $3 tries 0.1 s apart (default 600: a minute). Returns 1 on timeout.
wait_daemon() {
  local socket=$1 mnt=${2:-} tries=${3:-600}
  for _ in $(seq 1 "$tries"); do
    if [ -S "$socket" ] && { [ -z "$mnt" ] || mounted "$mnt"; }; then return 0; fi
    sleep 0.1
  done
  return 1
}

# Stop daemon $1 (a child of this shell): SIGTERM, up to $3 seconds (default 30)
# for it to exit, then SIGKILL; reaped either way. With $2, a mount left there is
# detached. Returns 0: a stop never fails a script's cleanup.
stop_daemon() {
  local daemon=$1 mnt=${2:-} limit=${3:-30}
  if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
    kill -TERM "$daemon" 2>/dev/null || true
    for _ in $(seq 1 $((limit * 10))); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$daemon" 2>/dev/null || true
  fi
  if [ -n "$daemon" ]; then wait "$daemon" 2>/dev/null || true; fi
  if [ -n "$mnt" ] && mounted "$mnt"; then umount -l "$mnt" 2>/dev/null || true; fi
  return 0
}

# The exact number of points in collection $1, over $SNAPFS_SOCKET.
points_count() {
  curl -s --unix-socket "$SNAPFS_SOCKET" -X POST "http://localhost/collections/$1/points/count" \
    -H 'content-type: application/json' -d '{"exact":true}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["count"])'
}

# The binaries and Python the Qdrant comparisons use. Each sets a variable:
#   QDRANT_BIN  Qdrant 1.18.3: $QDRANT_BIN, else target/qdrant-1.18.3, unpacked from
#               ../shared/bin/ when missing;
#   BIN         snapfs: $SNAPFS_BIN, else a release build;
#   PY          a Python with qdrant-client and numpy (target/py-venv, made if missing).
qdrant_binary() {
  QDRANT_BIN=${QDRANT_BIN:-$PWD/target/qdrant-1.18.3}
  if [ ! -x "$QDRANT_BIN" ]; then
    xz -dc ../shared/bin/qdrant-1.18.3-linux-x86_64.xz >"$QDRANT_BIN.part"
    chmod +x "$QDRANT_BIN.part" && mv "$QDRANT_BIN.part" "$QDRANT_BIN"
  fi
}
snapfs_binary() {
  if [ -z "${SNAPFS_BIN:-}" ]; then cargo build --release --quiet; fi
  BIN=${SNAPFS_BIN:-$PWD/target/release/snapfs}
}
bench_python() {
  PY=$PWD/target/py-venv/bin/python
  "$PY" -c 'import qdrant_client, numpy' 2>/dev/null || {
    python3 -m venv target/py-venv && "$PY" -m pip install -q qdrant-client numpy
  }
}

# Start a single-node Qdrant ($QDRANT_BIN) with its storage in directory $1, on
# free loopback ports, and wait until it answers. Sets qdrant_pid, qport (REST) and
# qgrpc; its log is $1/log.
start_qdrant() {
  qport=$(free_port); qgrpc=$(free_port)
  mkdir -p "$1"
  (cd "$1" && QDRANT__SERVICE__HOST=127.0.0.1 QDRANT__SERVICE__HTTP_PORT=$qport \
    QDRANT__SERVICE__GRPC_PORT=$qgrpc QDRANT__TELEMETRY_DISABLED=true \
    QDRANT__STORAGE__STORAGE_PATH=$1/storage QDRANT__STORAGE__SNAPSHOTS_PATH=$1/snapshots \
    exec "$QDRANT_BIN" >"$1/log" 2>&1) &
  qdrant_pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$qport/" >/dev/null && break; sleep 0.1; done
}
