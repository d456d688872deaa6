#!/usr/bin/env bash
# Backup policies' benchmark (issue 23), every figure beside a reference measured in
# the same run:
#
#  Phase 1, the cost of an idle policy set: the daemon (repository store, the demo
#  collection) idles IDLE_SECS without policies, then IDLE_SECS with POLICIES policies
#  (each with a backup schedule, a retention schedule and a drill schedule, none due):
#  CPU seconds used (utime + stime from /proc) and RssAnon at the end, each with its
#  ratio to the daemon without policies.
#
#  Phase 2, a drill of a BIG_MB collection (one shard, 1024-dim points) in a local
#  restic repository: one generation made by `snapfs backup run`, then `snapfs backup
#  run --job drill` with `read_data_parts: 1` (the repository's structure and every
#  pack read) and the restore drill (the generation restored into a scratch storage,
#  opened, counted, compared, sampled). Its time and the daemon's RssAnon peak, beside
#  the references on the same repository: `restic check --read-data` and `restic
#  restore` of the same generation (what reading it all back costs with restic's own
#  tool).
#
# Usage: scripts/bench-backups.sh   (env: BIG_MB=1024, IDLE_SECS=60, POLICIES=20,
# SNAPFS_BIN to skip the build). Figures go to docs/BENCHMARKS.md; nothing here is a
# pass/fail test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
BIG_MB=${BIG_MB:-1024}
IDLE_SECS=${IDLE_SECS:-60}
POLICIES=${POLICIES:-20}
DIM=1024
POINTS=$((BIG_MB * 1024 * 1024 / (DIM * 4)))
command -v restic >/dev/null || apt-get install -y -qq --no-install-recommends restic >/dev/null

if [ -z "${SNAPFS_BIN:-}" ]; then cargo build --release --quiet; fi
BIN=${SNAPFS_BIN:-$PWD/target/release/snapfs}
work=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-bench-backups.XXXXXX")
pid=
cleanup() {
  local status=$?
  stop_daemon "$pid"
  if [ "$status" -ne 0 ] && [ -f "$work/daemon.log" ]; then tail -20 "$work/daemon.log" >&2; fi
  rm -rf "$work"
}
trap cleanup EXIT
export SNAPFS_SOCKET=$work/data/snapfs.sock
echo bench-backups-password >"$work/password"
repo_env=(SNAPFS__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE=repository
  SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__LOCATION="$work/repo"
  SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__PASSWORD_FILE="$work/password")

start() {  # start the daemon with config file $1 and --demo
  rm -f "$SNAPFS_SOCKET"  # a socket left by the last daemon would look ready
  env "${repo_env[@]}" SNAPFS_LOG=warn,snapfs=info SNAPFS__STORAGE__SNAPSHOT_MAX_FREEZE_SECS=600 \
    "$BIN" serve --data-dir "$work/data" --demo --config "$1" 2>>"$work/daemon.log" &
  pid=$!
  wait_daemon "$SNAPFS_SOCKET"
}
settle() {  # until collection big is green (optimized and flushed)
  for _ in $(seq 1 900); do
    [ "$(curl -s --unix-socket "$SNAPFS_SOCKET" http://localhost/collections/big | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["status"])')" = green ] && return 0
    sleep 1
  done
}
cpu_secs() {  # utime + stime of process $1, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}
idle() {  # idle IDLE_SECS after a 5 s settling: CPU seconds in $cpu, RssAnon in $rss
  sleep 5
  local c0
  c0=$(cpu_secs "$pid")
  sleep "$IDLE_SECS"
  cpu=$(python3 -c "print(f'{$(cpu_secs "$pid") - $c0:.3f}')")
  rss=$(rss_anon "$pid")
}

echo "== phase 1: an idle policy set ($POLICIES policies, ${IDLE_SECS} s)"
echo "storage: {}" >"$work/none.yaml"
{
  echo "backups:"
  echo "  policies:"
  for i in $(seq 1 "$POLICIES"); do
    cat <<YAML
    - name: p$i
      collections: ["*"]
      schedule: { cron: "0 3 * * *", every: 1d, jitter: 10m }
      retention: { keep_daily: 7, keep_weekly: 4, schedule: { every: 1d } }
      drills: { schedule: { cron: "30 4 * * 0" }, read_data_parts: 30 }
YAML
  done
} >"$work/policies.yaml"
start "$work/none.yaml"
idle; none_cpu=$cpu; none_rss=$rss
stop_daemon "$pid"; pid=
start "$work/policies.yaml"
idle; set_cpu=$cpu; set_rss=$rss
stop_daemon "$pid"; pid=
echo "without policies: ${none_cpu} CPU s, RssAnon ${none_rss} kB; with $POLICIES: ${set_cpu} CPU s, RssAnon ${set_rss} kB"

echo "== phase 2: a drill of a ${BIG_MB} MB collection (${POINTS} x ${DIM}-dim, one shard)"
rm -rf "$work/data" "$work/repo"
cat >"$work/drill.yaml" <<YAML
backups:
  policies:
    - name: drill
      collections: [big]
      schedule: { every: 1d }
      drills: { schedule: { every: 1d }, read_data_parts: 1 }
YAML
# The policy names `big`: make it on a daemon without policies first.
start "$work/none.yaml"
"$BIN" collections create big --dim $DIM >/dev/null
"$BIN" points generate big --count "$POINTS" --dim $DIM --batch 250 >/dev/null
settle
stop_daemon "$pid" "" 600; pid=
start "$work/drill.yaml"
t0=$(now); "$BIN" backup run drill >/dev/null; t1=$(now)
echo "the generation: $(secs "$t0" "$t1") s"
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
sample_rss_anon "$pid" "$work/rss-drill"
t0=$(now); "$BIN" backup run drill --job drill >"$work/drill.json"; t1=$(now)
drill_took=$(secs "$t0" "$t1")
stop_sampler
drill_rss=$(sort -n "$work/rss-drill" | tail -1)
python3 - "$work/drill.json" <<'PY'
import json, sys
record = json.load(open(sys.argv[1]))
print(f"drill: {record['result']}, {record['seconds']:.3f} s")
for check in record["checks"]:
    print(f"  {check}")
PY
stop_daemon "$pid" "" 600; pid=

export RESTIC_PASSWORD_FILE=$work/password RESTIC_REPOSITORY=$work/repo
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(now); restic --no-cache check --read-data >/dev/null 2>&1; t1=$(now)
check_took=$(secs "$t0" "$t1")
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(now); restic --no-cache restore latest --tag scope=collection --target "$work/restic-restore" >/dev/null 2>&1; sync; t1=$(now)
restore_took=$(secs "$t0" "$t1")
restored_bytes=$(du -sb "$work/restic-restore" | cut -f1)
echo "restic check --read-data: ${check_took} s; restic restore of the generation: ${restore_took} s (${restored_bytes} bytes)"

echo "== ratios (same run)"
python3 - <<PY
print(f"idle CPU, $POLICIES policies / none: {$set_cpu:.3f} / {$none_cpu:.3f} s over ${IDLE_SECS} s")
print(f"idle RssAnon, $POLICIES policies / none: {$set_rss} / {$none_rss} kB = {$set_rss / $none_rss:.2f}")
ref = $check_took + $restore_took
print(f"drill / (restic check --read-data + restic restore): {$drill_took:.3f} / {ref:.3f} = {$drill_took / ref:.2f}")
print(f"drill RssAnon peak: {$drill_rss} kB")
PY
