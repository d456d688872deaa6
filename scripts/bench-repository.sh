#!/usr/bin/env bash
# The repository store's benchmark (issue 22): every figure beside a reference
# measured in the same run, on one BIG_MB collection (one shard, 1024-dim points).
#
#  Phase 1, the daemon with `snapshots_storage: repository` (a local restic repository
#  in the work dir) and the mount:
#   - the first generation (POST …/snapshots?wait=true), its time and what it stored;
#   - 1% of the points changed (spread over the ids), then the second generation:
#     its time and the bytes it added to the repository (the repository's size on
#     disk before and after);
#   - reference for the bytes: `restic backup` of the live file through the mount,
#     before and after the same change, into a repository of its own ("Added to the
#     repository" of the second backup);
#   - reading the second generation back: HTTP GET to /dev/null, `cp` out of the mount;
#   - restoring it by name (PUT …/snapshots/recover, until the answer);
#   - the daemon's RssAnon peak over the phase.
#  Phase 2, the same data dir served with the plain local store (the references):
#   - POST …/snapshots?wait=true of the same collection (what every generation would
#     cost without the repository: Qdrant's create is a full archive every time too);
#   - HTTP GET and `cp` out of the mount of that stored file; its restore by name.
#
# Usage: scripts/bench-repository.sh   (env: BIG_MB=1024, SNAPFS_BIN to skip the build)
# Figures go to docs/BENCHMARKS.md; nothing here is a pass/fail test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
BIG_MB=${BIG_MB:-1024}
DIM=1024
POINTS=$((BIG_MB * 1024 * 1024 / (DIM * 4)))
command -v restic >/dev/null || apt-get install -y -qq --no-install-recommends restic >/dev/null

# SNAPFS_BIN: a binary already built (a quick check of the script itself).
if [ -z "${SNAPFS_BIN:-}" ]; then cargo build --release --quiet; fi
BIN=${SNAPFS_BIN:-$PWD/target/release/snapfs}
work=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-bench-repo.XXXXXX")
pid=
cleanup() {
  stop_daemon "$pid" "$work/mnt"
  rm -rf "$work"
}
trap cleanup EXIT
export SNAPFS_SOCKET=$work/data/snapfs.sock
url=http://localhost
echo bench-repository-password >"$work/password"
du_bytes() { du -sb "$1" | cut -f1; }
post_snapshot() {  # the created snapshot's name in $name, the seconds in $took
  local t0 t1 body
  t0=$(now)
  body=$(curl -s --unix-socket "$SNAPFS_SOCKET" -X POST "$url/collections/big/snapshots?wait=true")
  t1=$(now); took=$(secs "$t0" "$t1")
  name=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["result"]["name"])' "$body")
}
restore_by_name() {  # seconds in $took
  local t0 t1
  t0=$(now)
  curl -s --fail --unix-socket "$SNAPFS_SOCKET" -X PUT "$url/collections/big/snapshots/recover" \
    -H 'content-type: application/json' -d "{\"location\":\"$1\"}" >/dev/null
  t1=$(now); took=$(secs "$t0" "$t1")
}
start() {  # start the daemon with the environment given as arguments
  env "$@" SNAPFS_LOG=warn,snapfs::snapshot::store=info SNAPFS__STORAGE__SNAPSHOT_MAX_FREEZE_SECS=600 \
    "$BIN" serve --data-dir "$work/data" --mount "$work/mnt" 2>>"$work/daemon.log" &
  pid=$!
  wait_daemon "$SNAPFS_SOCKET" "$work/mnt"
}
read_back() {  # read stored snapshot $1 over HTTP (caches dropped first), cp it out of
  # the mount, restore it: the seconds in $get, $copied, $restored
  local t0 t1
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now); curl -s --fail --unix-socket "$SNAPFS_SOCKET" "$url/collections/big/snapshots/$1" -o /dev/null; t1=$(now)
  get=$(secs "$t0" "$t1")
  t0=$(now); cp "$work/mnt/collections/big/snapshots/$1" /dev/null; t1=$(now)
  copied=$(secs "$t0" "$t1")
  restore_by_name "$1"; restored=$took
}
settle() {
  for _ in $(seq 1 900); do
    [ "$(curl -s --unix-socket "$SNAPFS_SOCKET" $url/collections/big | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["status"])')" = green ] && return 0
    sleep 1
  done
}

echo "== phase 1: the repository store (${BIG_MB} MB collection: ${POINTS} x ${DIM}-dim, one shard)"
start SNAPFS__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE=repository \
  SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__LOCATION="$work/repo" \
  SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__PASSWORD_FILE="$work/password"
sample_rss_anon "$pid" "$work/rss-repo"
"$BIN" collections create big --dim $DIM >/dev/null
"$BIN" points generate big --count "$POINTS" --dim $DIM --batch 250 >/dev/null
settle
repo0=$(du_bytes "$work/repo")
post_snapshot; first=$name; first_took=$took
repo1=$(du_bytes "$work/repo")
size=$(stat -c %s "$work/mnt/collections/big/snapshots/$first")
echo "first generation: ${first_took} s; archive $size bytes; the repository grew $((repo1 - repo0)) bytes"
post_snapshot; again=$name; again_took=$took
repo2=$(du_bytes "$work/repo")
echo "a second generation of the unchanged state: ${again_took} s; the repository grew $((repo2 - repo1)) bytes"

export RESTIC_PASSWORD_FILE=$work/password RESTIC_REPOSITORY=$work/restic-ref
restic init >/dev/null
restic backup --quiet "$work/mnt/live/big.snapshot" >/dev/null

changed=$((POINTS / 100))
python3 scripts/bench_spread_upsert.py "$SNAPFS_SOCKET" big $DIM $changed 100
settle
echo "changed $changed of $POINTS points (every 100th id)"
post_snapshot; second=$name; second_took=$took
repo3=$(du_bytes "$work/repo")
grep 'generation stored' "$work/daemon.log" | tail -1 | sed 's/^.*generation stored/  log: generation stored/'
restic_added=$(restic backup "$work/mnt/live/big.snapshot" 2>/dev/null | awk '/Added to the repository/ {print $5, $6}')
unset RESTIC_PASSWORD_FILE RESTIC_REPOSITORY
echo "second generation after the change: ${second_took} s; the repository grew $((repo3 - repo2)) bytes; restic backup of the live file added: $restic_added"

read_back "$second"; repo_get=$get; repo_cp=$copied; repo_restore=$restored
stop_sampler
repo_rss=$(sort -n "$work/rss-repo" | tail -1)
echo "reading the generation: HTTP GET ${repo_get} s, cp from the mount ${repo_cp} s; restore by name ${repo_restore} s; RssAnon peak ${repo_rss} kB"
stop_daemon "$pid" "$work/mnt"; pid=

echo "== phase 2: the plain local store, same data dir (references)"
start
sample_rss_anon "$pid" "$work/rss-local"
settle
post_snapshot; plain=$name; plain_took=$took
plain_size=$(stat -c %s "$work/data/snapshots/big/$plain")
read_back "$plain"; plain_get=$get; plain_cp=$copied; plain_restore=$restored
stop_sampler
plain_rss=$(sort -n "$work/rss-local" | tail -1)
echo "plain create: ${plain_took} s ($plain_size bytes); HTTP GET ${plain_get} s; cp from the mount ${plain_cp} s; restore by name ${plain_restore} s; RssAnon peak ${plain_rss} kB"

echo "== ratios (repository / plain, same run)"
python3 - <<PY
rows = [
    ("second generation create / plain create (bar <= 0.25)", $second_took, $plain_took),
    ("first generation create / plain create", $first_took, $plain_took),
    ("HTTP GET of a generation / of the plain file (bar <= 2)", $repo_get, $plain_get),
    ("cp from the mount, generation / plain (bar <= 2)", $repo_cp, $plain_cp),
    ("restore of a generation / of the plain file (bar <= 1.3)", $repo_restore, $plain_restore),
]
for what, a, b in rows:
    print(f"{what}: {a:.3f} / {b:.3f} = {a / b:.2f}")
print(f"bytes the second generation added: {$repo3 - $repo2:,}; an unchanged generation: {$repo2 - $repo1:,}; the first: {$repo1 - $repo0:,} of a {$size:,}-byte archive")
PY
echo "restic backup of the live file after the same change added: $restic_added"
