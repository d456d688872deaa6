#!/usr/bin/env bash
# snapfs benchmark: every figure next to a reference measured in the same run.
#
#  1. upsert: POINTS x DIM random points in batches of BATCH over the socket
#     (`snapfs points generate`, client-side generation and JSON included);
#     reference: `cp` of a plain file of the same raw vector bytes.
#  2. streaming a live snapshot of a ~BIG_MB collection (one shard) over HTTP to
#     /dev/null; references: `tar -cf - <shard dir> | cat >/dev/null` (GNU tar reading
#     every byte, holes as zeros) and `tar -cSf -` (GNU tar detecting holes, like ours).
#  3. time to first byte of a live snapshot, small (~10 MB) and big collection, settled
#     and right after an upsert (`wait=true`: the state to stream has unflushed changes).
#  4. stored snapshot creation (POST …/snapshots) of the big collection; reference:
#     `cp` of the resulting snapshot file.
#  5. the daemon's anonymous memory (RssAnon) peak while streaming the big snapshot,
#     and its peak RSS (VmHWM) over the whole run. Besides, every section prints the
#     daemon's RssAnon peak over its own span (sampled every 0.1 s through the run),
#     and so does the bulk load with its index build (the bar against Qdrant's peak
#     for the same load is scripts/bench-memory.sh).
#  6. upsert acknowledgement latency (p50/p99 of single-point upserts) while idle and
#     while a snapshot of the big collection streams (a slow reader holding the freeze).
#  7. the mount: `cp mnt/live/big.snapshot /dev/null` (a new state each time, which
#     goes through FUSE; and the same state again, from the
#     kernel's page cache) vs `tar -cf - <shard dir> | cat` vs
#     `cat` of a plain file of the same size; `cp` of a stored snapshot through the
#     mount vs `cat` of the same file on disk; first byte through the mount (idle, and
#     right after an upsert with the old state cached); RssAnon
#     while copying.
#     And the FUSE ceilings (examples/fuse_ceiling.rs), minimal FUSE servers of one
#     file of the same size with the same mount options: one replies from a 1 MiB
#     pattern in memory (the strictest), one preads a plain file (the page-cached
#     plain.bin) as any server of one plain file does; bar 5 is against the latter,
#     and both ratios are printed.
#  8. restore of the big and the mid (~MID_MB) collections' stored snapshots, end to end (until the
#     collection answers with the restored count): `cp` into mnt/recover/ and
#     `snapfs recover` (HTTP upload) vs `tar -xf` of the same archive.
#  9. partial snapshots: a second daemon mirrors the big collection's shard; 1% of
#     its points change (spread over ids); the partial archive (both manifest forms)
#     vs the full shard snapshot, in bytes and time, and the bytes the daemon read
#     for it; a pull (recover_from) between the daemons vs a full restore of the same
#     state from the peer; manifest latency (unchanged shard, after one upsert);
#     references: `rsync --no-whole-file` of the live file from before to after (its
#     literal data) and restic's "Added to the repository".
# 10. (run last: it restarts the daemon) S3 (stored snapshots in a moto server, started here from PyPI): the daemon is
#     restarted with `snapshots_storage: s3`; POST …/snapshots of the big collection
#     streamed into a multipart upload (RssAnon peak while it runs) vs boto3's
#     `upload_file` of the same archive (8 MiB parts, 4 at a time: the same settings);
#     GET of it over HTTP and `cp` out of the mount vs boto3's `download_fileobj` to
#     /dev/null (a plain S3 client), RssAnon peak during the `cp`.
#
# 11. Qdrant's flow for a verified snapshot file in hand, on the 100k x 128 `bench`
#     collection of section 1: `POST …/snapshots?wait=true` + `GET` + `sha256sum`, and
#     the mount's way (`cp live/bench.snapshot` + `sha256sum -c` of its `.sha256`), vs
#     `cp` + `sync` of the same bytes (the ratio compares across runs: Qdrant 1.18.3 took
#     0.67-0.69 s for this flow where `cp` + `sync` took 0.11 s, a ratio of ~6.2).
# 12. memory: the daemon's RssAnon right after bulk-loading the big collection (batches
#     of 250 x 1024-dim points, then 1000) and 5 s later.
#
# Usage: scripts/bench.sh    (env: POINTS=100000 DIM=128 BATCH=1000 BIG_MB=1024,
#        MOUNT_ROUNDS=3 (section 7's rounds),
#        SECTIONS="1 2 … 9" to run only some; the big collection is always built)
# Figures go to docs/BENCHMARKS.md; nothing here is a pass/fail test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
POINTS=${POINTS:-100000}
DIM=${DIM:-128}
BATCH=${BATCH:-1000}
BIG_MB=${BIG_MB:-1024}
MID_MB=${MID_MB:-300}
MID_POINTS=$((MID_MB * 1024 * 1024 / (1024 * 4)))
BIG_DIM=1024
BIG_POINTS=$((BIG_MB * 1024 * 1024 / (BIG_DIM * 4)))
SMALL_POINTS=$((10 * 1024 * 1024 / (BIG_DIM * 4)))

cargo build --release --quiet
cargo build --release --quiet --example fuse_ceiling
BIN=$PWD/target/release/snapfs
CEILING=$PWD/target/release/examples/fuse_ceiling
work=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-bench.XXXXXX")
pid=
moto_pid=
ceiling_pid=
ceiling_plain_pid=
run_sampler=
cleanup() {
  rm -f "$work/daemon.pid"
  [ -n "$run_sampler" ] && kill "$run_sampler" 2>/dev/null
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null
  stop_daemon "$ceiling_pid" "$work/ceiling" 5
  stop_daemon "$ceiling_plain_pid" "$work/ceiling-plain" 5
  stop_daemon "$pid" "$work/mnt"
  rm -rf "$work"
}
trap cleanup EXIT

SECTIONS=${SECTIONS:-1 2 3 4 5 6 7 8 9 10 11 12}
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
export SNAPFS_SOCKET=$work/data/snapfs.sock
export SNAPFS_API_KEY=bench-key
port_a=$(free_port)
SNAPFS_LOG=warn,snapfs::snapshot::restore=info,snapfs::snapshot::partial=info SNAPFS__STORAGE__SNAPSHOT_MAX_FREEZE_SECS=600 "$BIN" serve --data-dir "$work/data" --mount "$work/mnt" --http "127.0.0.1:$port_a" 2>"$work/daemon.log" &
pid=$!
wait_daemon "$SNAPFS_SOCKET" || true
url=http://localhost
# The daemon's RssAnon through the whole run, every 0.1 s, whichever daemon serves
# (section 10 restarts it: it rewrites daemon.pid); each section prints its peak.
echo "$pid" >"$work/daemon.pid"
( while [ -e "$work/daemon.pid" ]; do
    p=$(cat "$work/daemon.pid" 2>/dev/null) && rss_anon "$p" 2>/dev/null
    sleep 0.1
  done ) >"$work/anon-run.log" &
run_sampler=$!
section_mark=0
section_start() { section_mark=$(wc -l <"$work/anon-run.log"); }
section_peak() {
  local peak
  peak=$(tail -n +"$((section_mark + 1))" "$work/anon-run.log" | sort -n | tail -1)
  [ -n "$peak" ] && python3 -c "print(f'section $1: daemon RssAnon peak {$peak/1024:.0f} MiB')" || true
}
mnt=$work/mnt
# Best of three runs each: the machine is small and shared, the minimum is the least noisy.
best() { python3 -c "import sys; print(min(float(x) for x in sys.argv[1:]))" "$@"; }
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }

if want 1 || want 6; then
section_start
echo "== 1. upsert throughput"
"$BIN" collections create bench --dim "$DIM" >/dev/null
t0=$(now); "$BIN" points generate bench --count "$POINTS" --dim "$DIM" --batch "$BATCH" >/dev/null; t1=$(now)
head -c $((POINTS * DIM * 4)) /dev/urandom >"$work/raw.bin"; cat "$work/raw.bin" >/dev/null
r0=$(now); cp "$work/raw.bin" "$work/raw-copy.bin"; r1=$(now); rm -f "$work/raw.bin" "$work/raw-copy.bin"
up=$(secs "$t0" "$t1"); ref=$(secs "$r0" "$r1")
python3 -c "print(f'upsert {$POINTS} x {$DIM}-dim in batches of {$BATCH}: {$up} s = {$POINTS/$up:,.0f} points/s ({$POINTS*$DIM*4/1e6/$up:.1f} MB/s of vectors); cp of the same raw bytes: {$ref} s')"
section_peak 1

fi

echo "== building a ${BIG_MB} MB collection (${BIG_POINTS} x ${BIG_DIM}-dim) and a 10 MB one"
section_start
"$BIN" collections create big --dim $BIG_DIM >/dev/null
"$BIN" points generate big --count "$BIG_POINTS" --dim $BIG_DIM --batch 250 >/dev/null
anon_loaded=$(rss_anon); sleep 5; anon_loaded_later=$(rss_anon)
if want 8; then
  "$BIN" collections create mid --dim $BIG_DIM >/dev/null
  "$BIN" points generate mid --count "$MID_POINTS" --dim $BIG_DIM --batch 1000 >/dev/null
  anon_mid=$(rss_anon); sleep 5; anon_mid_later=$(rss_anon)
fi
"$BIN" collections create small --dim $BIG_DIM >/dev/null
"$BIN" points generate small --count "$SMALL_POINTS" --dim $BIG_DIM --batch 250 >/dev/null
# Let background flush and optimization (index building) finish: every collection
# reports status green (no shard optimizing) three checks in a row (an index build
# of one would take a core from the measurements of another).
all_green() {
  local c names
  names=$(curl -s --unix-socket "$SNAPFS_SOCKET" $url/collections | python3 -c 'import json,sys; print(" ".join(c["name"] for c in json.load(sys.stdin)["result"]["collections"]))') || return 1
  [ -n "$names" ] || return 1
  for c in $names; do
    [ "$(curl -s --unix-socket "$SNAPFS_SOCKET" $url/collections/$c | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["status"])')" = green ] || return 1
  done
}
green=0
for _ in $(seq 1 1800); do
  if all_green; then green=$((green + 1)); else green=0; fi
  [ $green -ge 3 ] && break
  sleep 1
done
shard=$work/data/storage/collections/big/0
echo "big shard on disk: $(du -sh --apparent-size "$shard" | cut -f1) apparent, $(du -sh "$shard" | cut -f1) allocated"
section_peak "bulk load and index build"

if want 2 || want 5; then
section_start
echo "== 2. streaming a live snapshot (warm cache)"
curl -s --unix-socket "$SNAPFS_SOCKET" $url/collections/big/shards/0/snapshot -o /dev/null   # warm
anon_before=$(rss_anon); peak_anon=$anon_before
sample_rss_anon "$pid" "$work/anon.log" 0.05
size=$(curl -s --unix-socket "$SNAPFS_SOCKET" $url/collections/big/shards/0/snapshot -o /dev/null -w '%{size_download}')
stop_sampler
peak_anon=$(sort -n "$work/anon.log" | tail -1)
runs_s=(); runs_a=(); runs_b=()
for _ in 1 2 3; do
  s0=$(now); curl -s --unix-socket "$SNAPFS_SOCKET" $url/collections/big/shards/0/snapshot -o /dev/null; s1=$(now); runs_s+=("$(secs "$s0" "$s1")")
  a0=$(now); tar -cf - -C "$work/data/storage/collections/big" 0 | cat >/dev/null; a1=$(now); runs_a+=("$(secs "$a0" "$a1")")
  b0=$(now); tar -cSf - -C "$work/data/storage/collections/big" 0 | cat >/dev/null; b1=$(now); runs_b+=("$(secs "$b0" "$b1")")
done
stream=$(best "${runs_s[@]}"); tar_plain=$(best "${runs_a[@]}"); tar_sparse=$(best "${runs_b[@]}")
python3 -c "print(f'live snapshot over HTTP: {$size/1e6:.0f} MB in {$stream} s ({$size/1e6/$stream:.0f} MB/s); tar -cf | cat: {$tar_plain} s; tar -cSf | cat: {$tar_sparse} s; ratio snapfs/tar-cf = {$stream/$tar_plain:.2f}, snapfs/tar-cSf = {$stream/$tar_sparse:.2f}')"
section_peak 2

fi

if want 3; then
section_start
echo "== 3. time to first byte"
for c in small big; do
  ttfb=$(curl -s --unix-socket "$SNAPFS_SOCKET" $url/collections/$c/shards/0/snapshot -o /dev/null -w '%{time_starttransfer}')
  after=()
  for i in 1 2 3; do
    "$BIN" points generate $c --count 1 --dim $BIG_DIM --batch 1 --start $((800000000 + i)) >/dev/null
    after+=("$(curl -s --unix-socket "$SNAPFS_SOCKET" $url/collections/$c/shards/0/snapshot -o /dev/null -w '%{time_starttransfer}')")
  done
  echo "$c: first byte after ${ttfb} s settled; right after an upsert: ${after[*]} s (bar: < 0.050)"
done

section_peak 3
fi

if want 4 || want 7 || want 8; then
section_start
echo "== 4. stored snapshot creation"
c0=$(now); name=$(curl -s --unix-socket "$SNAPFS_SOCKET" -X POST $url/collections/big/snapshots | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["name"])'); c1=$(now)
stored=$work/data/snapshots/big/$name
cat "$stored" >/dev/null
d0=$(now); cp "$stored" "$work/copy.snapshot"; d1=$(now); rm -f "$work/copy.snapshot"
python3 -c "print(f'POST /collections/big/snapshots: {$(secs "$c0" "$c1")} s for {$(stat -c %s "$stored")/1e6:.0f} MB (streamed, hashed, fsynced); cp of that file: {$(secs "$d0" "$d1")} s')"
section_peak 4

fi

if want 5; then
section_start
echo "== 5. memory"
python3 -c "print(f'daemon RssAnon: {$anon_before/1024:.0f} MiB before streaming, peak {$peak_anon/1024:.0f} MiB while streaming {$size/1e6:.0f} MB')"
echo "daemon peak RSS (VmHWM, whole run, file-backed mmap pages included): $(awk '/VmHWM/ {print int($2/1024)}' /proc/$pid/status) MiB"

section_peak 5
fi

if want 6; then
section_start
echo "== 6. upsert acknowledgement latency"
idle=$(python3 scripts/bench_latency.py "$SNAPFS_SOCKET" bench "$DIM" 300 1000000)
curl -s --unix-socket "$SNAPFS_SOCKET" --limit-rate 20M $url/collections/bench/shards/0/snapshot -o /dev/null &
slow=$!
sleep 0.5
busy=$(python3 scripts/bench_latency.py "$SNAPFS_SOCKET" bench "$DIM" 300 2000000)
kill $slow 2>/dev/null || true; wait $slow 2>/dev/null || true
echo "idle: p50/p99 = ${idle// / / } ms; while a snapshot streams: p50/p99 = ${busy// / / } ms"

section_peak 6
fi

if want 7; then
section_start
echo "== 7. the mount"
big_dir=$work/data/storage/collections/big
msize=$(stat -c %s "$mnt/live/big.snapshot")
head -c "$msize" /dev/urandom >"$work/plain.bin"; cat "$work/plain.bin" >/dev/null
runs_new=(); runs_same=(); runs_t=(); runs_c=(); runs_ceil=(); runs_plain=()
# The FUSE ceilings: minimal servers of one file of the same size, with snapfs's
# mount options, threads, readahead and open flags (examples/fuse_ceiling.rs): one
# replies from a pattern in memory, one preads the plain file.
mkdir -p "$work/ceiling" "$work/ceiling-plain"
"$CEILING" "$work/ceiling" "$msize" &
ceiling_pid=$!
"$CEILING" "$work/ceiling-plain" "$msize" "$work/plain.bin" &
ceiling_plain_pid=$!
for _ in $(seq 1 50); do [ -e "$work/ceiling/file" ] && [ -e "$work/ceiling-plain/file" ] && break; sleep 0.1; done
# A first copy of each, not counted: a new mount's first copy ran 3-4 times slower
# (snapfs's too).
cp "$work/ceiling/file" /dev/null; cp "$work/ceiling-plain/file" /dev/null
cp "$mnt/live/big.snapshot" /dev/null
anon_before=$(rss_anon)
sample_rss_anon "$pid" "$work/anon-mount.log" 0.05
for i in $(seq 1 "${MOUNT_ROUNDS:-3}"); do
  # A new state each round (one point upserted, settled), so the read goes through
  # FUSE (the page cache of the old state is dropped).
  "$BIN" points generate big --count 1 --dim $BIG_DIM --batch 1 >/dev/null
  sleep 2
  stat "$mnt/live/big.snapshot" >/dev/null
  m0=$(now); cp "$mnt/live/big.snapshot" /dev/null; m1=$(now); runs_new+=("$(secs "$m0" "$m1")")
  m0=$(now); cp "$mnt/live/big.snapshot" /dev/null; m1=$(now); runs_same+=("$(secs "$m0" "$m1")")
  t0=$(now); tar -cf - -C "$big_dir" 0 | cat >/dev/null; t1=$(now); runs_t+=("$(secs "$t0" "$t1")")
  c0=$(now); cat "$work/plain.bin" >/dev/null; c1=$(now); runs_c+=("$(secs "$c0" "$c1")")
  e0=$(now); cp "$work/ceiling/file" /dev/null; e1=$(now); runs_ceil+=("$(secs "$e0" "$e1")")
  e0=$(now); cp "$work/ceiling-plain/file" /dev/null; e1=$(now); runs_plain+=("$(secs "$e0" "$e1")")
done
kill "$ceiling_pid" "$ceiling_plain_pid"; wait "$ceiling_pid" "$ceiling_plain_pid" 2>/dev/null || true
# The first byte of a new state right after an upsert, with the old state in the page
# cache (a whole cp of it just before): open (which looks the file up and stats
# it) and a one-byte read.
runs_fb=()
for i in 1 2 3; do
  cp "$mnt/live/big.snapshot" /dev/null
  "$BIN" points generate big --count 1 --dim $BIG_DIM --batch 1 --start $((700000000 + i)) >/dev/null
  runs_fb+=("$(python3 -c "
import time; t=time.perf_counter(); f=open('$mnt/live/big.snapshot','rb'); f.read(1); print(f'{time.perf_counter()-t:.4f}')")")
done
echo "first byte through the mount right after an upsert, the old state cached: ${runs_fb[*]} s (bar 3: < 0.050 s)"
stop_sampler
peak_anon=$(sort -n "$work/anon-mount.log" | tail -1)
mnew=$(best "${runs_new[@]}"); msame=$(best "${runs_same[@]}"); mtar=$(best "${runs_t[@]}"); mcat=$(best "${runs_c[@]}"); mceil=$(best "${runs_ceil[@]}"); mplain=$(best "${runs_plain[@]}")
python3 -c "print(f'FUSE ceilings for a {$msize/1e6:.0f} MB file, best: a plain file pread and replied {$mplain} s ({$msize/1e6/$mplain:.0f} MB/s), snapfs new-state cp reaches {$mplain/$mnew*100:.0f}% of it (bar: >= 90%); a 1 MiB pattern in memory {$mceil} s ({$msize/1e6/$mceil:.0f} MB/s), {$mceil/$mnew*100:.0f}% of it')"
# Each round's ratios too (snapfs and the ceilings run back to back in a round), and
# their medians: one round's noise shows.
python3 -c "
import statistics, sys
n = len(sys.argv) // 3
new = [float(x) for x in sys.argv[1:n + 1]]
for label, ref in (('a plain file', sys.argv[n + 1:2 * n + 1]), ('the in-memory pattern', sys.argv[2 * n + 1:])):
    ref = [float(x) for x in ref]
    r = [c / m * 100 for m, c in zip(new, ref)]
    print(f'per round, % of the ceiling of {label}: ' + ' '.join(f'{x:.0f}' for x in r) + f'; median {statistics.median(r):.0f}%; medians of the times: snapfs {statistics.median(new):.3f} s, ceiling {statistics.median(ref):.3f} s')
" "${runs_new[@]}" "${runs_plain[@]}" "${runs_ceil[@]}"
python3 -c "print(f'cp mnt/live/big.snapshot /dev/null ({$msize/1e6:.0f} MB): new state (through FUSE) {$mnew} s ({$msize/1e6/$mnew:.0f} MB/s), same state again (kernel page cache) {$msame} s; tar -cf <shard> | cat: {$mtar} s; cat of a plain {$msize/1e6:.0f} MB file: {$mcat} s; ratio new-state cp/tar = {$mnew/$mtar:.2f}, cp/cat = {$mnew/$mcat:.2f}')"
python3 -c "print(f'daemon RssAnon while copying through the mount: {$anon_before/1024:.0f} MiB before, peak {$peak_anon/1024:.0f} MiB')"
sname=$name   # section 4's snapshot, the file `cat "$stored"` reads
cat "$stored" >/dev/null
runs_s=(); runs_d=()
for _ in 1 2 3; do
  s0=$(now); cp "$mnt/collections/big/snapshots/$sname" /dev/null; s1=$(now); runs_s+=("$(secs "$s0" "$s1")")
  d0=$(now); cat "$stored" >/dev/null; d1=$(now); runs_d+=("$(secs "$d0" "$d1")")
done
python3 -c "print(f'cp of a stored snapshot through the mount: {$(best "${runs_s[@]}")} s; cat of the same file on disk: {$(best "${runs_d[@]}")} s')"
# Let the optimization after the upserts above finish: a freeze waits for it.
for _ in $(seq 1 600); do
  all_green && break
  sleep 1
done
ttfb=$(python3 -c "
import time; t=time.perf_counter(); f=open('$mnt/live/small.snapshot','rb'); f.read(1); print(f'{time.perf_counter()-t:.4f}')")
ttfb_big=$(python3 -c "
import time; t=time.perf_counter(); f=open('$mnt/live/big.snapshot','rb'); f.read(1); print(f'{time.perf_counter()-t:.4f}')")
echo "first byte through the mount (open + read 1 byte): small ${ttfb} s, big ${ttfb_big} s"

section_peak 7
fi

if want 8; then
section_start
echo "== 8. restore"
for rc in mid big; do
if [ $rc = mid ]; then
  mname=$(curl -s --unix-socket "$SNAPFS_SOCKET" -X POST $url/collections/mid/snapshots | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["name"])')
  stored=$work/data/snapshots/mid/$mname
else
  stored=$work/data/snapshots/big/$name
fi
want=$(points_count "$rc")
sum=$(cat "$stored.checksum")
cat "$stored" >/dev/null
runs_fs=(); runs_http=(); runs_tar=(); runs_tar_sync=()
for round in 1 2 3; do
  mkdir -p "$work/untar"
  cat "$stored" >/dev/null   # every run starts from a cached archive (the VM reclaims idle cache)
  x0=$(now); tar -xf "$stored" -C "$work/untar"; x1=$(now); runs_tar+=("$(secs "$x0" "$x1")"); rm -rf "$work/untar"; sync
  mkdir -p "$work/untar"
  cat "$stored" >/dev/null
  x0=$(now); tar -xf "$stored" -C "$work/untar"; sync; x1=$(now); runs_tar_sync+=("$(secs "$x0" "$x1")"); rm -rf "$work/untar"
  printf '%s  restored-fs.snapshot\n' "$sum" >"$mnt/recover/restored-fs.snapshot.sha256"
  cat "$stored" >/dev/null
  f0=$(now); cp "$stored" "$mnt/recover/restored-fs.snapshot"; got=$(points_count restored-fs); f1=$(now); runs_fs+=("$(secs "$f0" "$f1")")
  [ "$got" = "$want" ] || echo "WARNING: restored-fs has $got points, expected $want"
  cat "$stored" >/dev/null
  h0=$(now); "$BIN" recover restored-http "$stored" --checksum "$sum" >/dev/null; got=$(points_count restored-http); h1=$(now); runs_http+=("$(secs "$h0" "$h1")")
  [ "$got" = "$want" ] || echo "WARNING: restored-http has $got points, expected $want"
  for c in restored-fs restored-http; do curl -s --unix-socket "$SNAPFS_SOCKET" -X DELETE "$url/collections/$c" >/dev/null; done
done
via_fs=$(median "${runs_fs[@]}"); via_http=$(median "${runs_http[@]}"); untar=$(median "${runs_tar[@]}"); untar_sync=$(median "${runs_tar_sync[@]}")
echo "runs (s): cp ${runs_fs[*]} | upload ${runs_http[*]} | tar -xf ${runs_tar[*]} | tar -xf+sync ${runs_tar_sync[*]}"
# Where each restore's time went, from the daemon's log: receiving and unpacking (the
# one pass over the bytes), checking (engine open, syncfs), switching (reopen).
sed 's/\x1b\[[0-9;]*m//g' "$work/daemon.log" | grep ' restored ' | grep -o 'collection="[^"]*".*switched_ms=[0-9]*' | sed 's/sha256=[0-9a-f]* //' | tail -6 || true
python3 -c "print(f'restore of a {$(stat -c %s "$stored")/1e6:.0f} MB snapshot ({$want} points), checksum verified, medians of 3: cp into recover/ {$via_fs} s, snapfs recover (upload) {$via_http} s; tar -xf of the same archive {$untar} s, tar -xf then sync {$untar_sync} s; ratios to tar -xf {$via_fs/$untar:.2f} / {$via_http/$untar:.2f}, to tar -xf + sync {$via_fs/$untar_sync:.2f} / {$via_http/$untar_sync:.2f}')"
done
section_peak 8
fi

if want 9; then
section_start
echo "== 9. partial snapshots"
command -v restic >/dev/null || { apt-get install -y -qq restic >/dev/null 2>&1 || true; }
key=$SNAPFS_API_KEY
peer_a=http://127.0.0.1:$port_a
# B: a second daemon that mirrors the big collection's shard.
port_b=$(free_port)
sock_b=$work/b/snapfs.sock
SNAPFS_LOG=warn,snapfs::snapshot::partial=info "$BIN" serve --data-dir "$work/b" --http "127.0.0.1:$port_b" 2>"$work/daemon-b.log" &
pid_b=$!
wait_daemon "$sock_b" || true
SNAPFS_SOCKET=$sock_b "$BIN" collections create big --dim $BIG_DIM >/dev/null
pull_b() {  # prints "seconds bytes_moved full_size"
  local t0 t1 out
  t0=$(now)
  out=$(curl -s --unix-socket "$sock_b" -X POST "$url/collections/big/shards/0/snapshot/partial/recover_from" \
    -H 'content-type: application/json' -d "{\"peer_url\": \"$peer_a\", \"api_key\": \"$key\"}")
  t1=$(now)
  echo "$(secs "$t0" "$t1") $(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["snapfs"]["bytes"], d["snapfs"]["full_size"])')"
}
read -r first_s first_bytes full_bytes <<<"$(pull_b)"
python3 -c "print(f'first pull into an empty shard (everything): {$first_bytes/1e6:.0f} MB in {$first_s} s')"
# The state before: the live shard file, and B's manifests of it.
cp "$mnt/collections/big/shards/0/big-shard-0.snapshot" "$work/before.snapshot"
curl -s --unix-socket "$sock_b" "$url/collections/big/shards/0/snapshot/partial/manifest?format=files" | python3 -c 'import json,sys; json.dump(json.load(sys.stdin)["result"], sys.stdout)' >"$work/content.json"
curl -s --unix-socket "$sock_b" "$url/collections/big/shards/0/snapshot/partial/manifest" | python3 -c 'import json,sys; json.dump(json.load(sys.stdin)["result"], sys.stdout)' >"$work/versions.json"
if command -v restic >/dev/null; then
  export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$work/restic
  restic init >/dev/null
  restic backup --quiet "$work/before.snapshot" >/dev/null
fi

# 1% of the points, spread over the ids (every 100th).
changed=$((BIG_POINTS / 100))
python3 scripts/bench_spread_upsert.py "$SNAPFS_SOCKET" big $BIG_DIM $changed 100
for _ in $(seq 1 900); do
  all_green && break
  sleep 1
done
python3 -c "print(f'changed {$changed} of {$BIG_POINTS} points ({$changed * $BIG_DIM * 4 / 1e6:.1f} MB of vectors)')"

# The partial archives A makes for B, against a full shard snapshot of A.
read_bytes() { awk '/^rchar/ {print $2}' "/proc/$pid/io"; }
curl -s --unix-socket "$SNAPFS_SOCKET" "$url/collections/big/shards/0/snapshot/partial/manifest" >/dev/null  # settle the state
for form in content versions; do
  r0=$(read_bytes); p0=$(now)
  psize=$(curl -s --unix-socket "$SNAPFS_SOCKET" -X POST "$url/collections/big/shards/0/snapshot/partial/create" \
    -H 'content-type: application/json' --data-binary @"$work/$form.json" -o "$work/$form.partial" -w '%{size_download}')
  p1=$(now); r1=$(read_bytes)
  python3 -c "print(f'partial ({\"$form\"} manifest of {$(stat -c %s "$work/$form.json")/1e3:.0f} kB): {$psize/1e6:.1f} MB in {$(secs "$p0" "$p1")} s; the daemon read {($r1-$r0)/1e6:.1f} MB for it')"
  # Where its bytes are: the largest entries (stored bytes; patches marked).
  python3 - "$work/$form.partial" <<'PY'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
manifest = {}
if "snapfs-manifest.json" in t.getnames():
    manifest = {e["path"]: e for e in json.load(t.extractfile("snapfs-manifest.json")).get("entries", [])}
sizes = []
for m in t.getmembers():
    if m.isfile():
        stored = sum(l for _, l in m.sparse) if m.sparse else m.size
        kind = "delta" if "copies" in manifest.get(m.name, {}) else "whole"
        sizes.append((stored, m.name, kind))
for stored, name, kind in sorted(sizes, reverse=True)[:6]:
    print(f"    {stored/1e6:7.2f} MB  {kind:5}  {name}")
PY
done
r0=$(read_bytes); f0=$(now)
fsize=$(curl -s --unix-socket "$SNAPFS_SOCKET" "$url/collections/big/shards/0/snapshot" -o /dev/null -w '%{size_download}')
f1=$(now); r1=$(read_bytes)
python3 -c "print(f'full shard snapshot: {$fsize/1e6:.1f} MB in {$(secs "$f0" "$f1")} s; the daemon read {($r1-$r0)/1e6:.1f} MB for it')"

# References: rsync's delta of the live file from before to after; restic.
mkdir -p "$work/rsync" && cp "$work/before.snapshot" "$work/rsync/big.snapshot"
literal=$(rsync --no-whole-file --stats "$mnt/live/big.snapshot" "$work/rsync/big.snapshot" | awk '/Literal data/ {gsub(",", "", $3); print $3}')
python3 -c "print(f'rsync --no-whole-file before -> after: literal data {$literal/1e6:.1f} MB ({$literal*100/$fsize:.1f}% of the archive), reading both whole files')"
if command -v restic >/dev/null; then
  cp "$mnt/live/big.snapshot" "$work/before.snapshot"
  added=$(restic backup "$work/before.snapshot" 2>/dev/null | awk '/Added to the repository/ {print $5, $6}')
  echo "restic backup of the new state after the old one: added to the repository $added"
fi

# Pull vs a full restore of the same state from the peer.
read -r pull_s pull_bytes full_bytes <<<"$(pull_b)"
python3 -c "print(f'pull (recover_from) of the change: moved {$pull_bytes/1e6:.1f} MB of a full {$full_bytes/1e6:.0f} MB ({$pull_bytes*100/$full_bytes:.2f}%) in {$pull_s} s')"
r0=$(now)
curl -s --unix-socket "$sock_b" -X PUT "$url/collections/big/shards/0/snapshots/recover" -H 'content-type: application/json' \
  -d "{\"location\": \"$peer_a/collections/big/shards/0/snapshot\", \"api_key\": \"$key\"}" >/dev/null
r1=$(now)
python3 -c "print(f'full restore of the same state from the peer (recover from its live shard URL): {$(secs "$r0" "$r1")} s')"

# Manifest latency: an unchanged shard (cache), and right after one upsert.
lat() { curl -s --unix-socket "$SNAPFS_SOCKET" "$url/collections/big/shards/0/snapshot/partial/manifest$1" -o /dev/null -w '%{time_total}'; }
lat "" >/dev/null; lat "?format=files" >/dev/null
unchanged=$(lat ""); unchanged_files=$(lat "?format=files")
"$BIN" points generate big --count 1 --dim $BIG_DIM --batch 1 --start 900000000 >/dev/null
after=$(lat "")
"$BIN" points generate big --count 1 --dim $BIG_DIM --batch 1 --start 900000001 >/dev/null
after_files=$(lat "?format=files")
echo "manifest latency: unchanged shard ${unchanged} s (content form ${unchanged_files} s); after one upsert ${after} s (content form ${after_files} s)"
stop_daemon "$pid_b"
section_peak 9
fi

if want 11 && want 1; then
section_start
echo "== 11. a verified snapshot file in hand: Qdrant's flow and the mount's"
runs_q=(); runs_m=(); runs_ref=(); runs_create=(); runs_get=(); runs_cat=()
for i in 1 2 3; do
  # A new state each round, as after real writes.
  "$BIN" points generate bench --count 1 --dim "$DIM" --batch 1 --start $((700000000 + i)) >/dev/null
  rm -f "$work/q.snapshot"
  q0=$(now)
  qname=$(curl -s --unix-socket "$SNAPFS_SOCKET" -X POST "$url/collections/bench/snapshots?wait=true" | python3 -c 'import json,sys; r=json.load(sys.stdin)["result"]; print(r["name"])')
  qa=$(now)
  curl -s --unix-socket "$SNAPFS_SOCKET" "$url/collections/bench/snapshots/$qname" -o "$work/q.snapshot"
  qb=$(now)
  sha256sum "$work/q.snapshot" >/dev/null
  q1=$(now); runs_q+=("$(secs "$q0" "$q1")"); runs_create+=("$(secs "$q0" "$qa")"); runs_get+=("$(secs "$qa" "$qb")")
  echo "  round $i: create $(secs "$q0" "$qa") s, GET $(secs "$qa" "$qb") s, sha256sum $(secs "$qb" "$q1") s"
  "$BIN" points generate bench --count 1 --dim "$DIM" --batch 1 --start $((710000000 + i)) >/dev/null
  rm -f "$work/m.snapshot"
  m0=$(now)
  cp "$mnt/live/bench.snapshot" "$work/m.snapshot"
  (cd "$work" && sed 's/  bench.snapshot$/  m.snapshot/' "$mnt/live/bench.snapshot.sha256" | sha256sum -c --quiet)
  m1=$(now); runs_m+=("$(secs "$m0" "$m1")")
  qsize=$(stat -c %s "$work/q.snapshot")
  r0=$(now); cp "$work/q.snapshot" "$work/ref.snapshot"; sync; r1=$(now); runs_ref+=("$(secs "$r0" "$r1")")
  k0=$(now); cat "$work/ref.snapshot" >"$work/ref2.snapshot"; k1=$(now); runs_cat+=("$(secs "$k0" "$k1")"); rm -f "$work/ref2.snapshot"
  rm -f "$work/ref.snapshot" "$work/data/snapshots/bench/$qname" "$work/data/snapshots/bench/$qname.checksum"
done
qflow=$(best "${runs_q[@]}"); mflow=$(best "${runs_m[@]}"); ref=$(best "${runs_ref[@]}")
python3 -c "print(f'{$qsize/1e6:.0f} MB: POST ?wait=true + GET + sha256sum {$qflow} s; cp live/bench.snapshot + sha256sum -c {$mflow} s; cp + sync of the same bytes {$ref} s; ratios to cp+sync {$qflow/$ref:.2f} and {$mflow/$ref:.2f} (Qdrant 1.18.3: ~6.2; bars: <= 3.1 and <= 2.1)')"
qcreate=$(best "${runs_create[@]}"); qget=$(best "${runs_get[@]}"); qcat=$(best "${runs_cat[@]}")
python3 -c "print(f'the server side of that flow: create {$qcreate} s = {$qcreate/$ref:.2f}x cp+sync (bar <= 1.3); GET into a file {$qget} s vs cat of the same file into a file {$qcat} s = {$qget/$qcat:.2f}x (bar: page-cache speed)')"
section_peak 11
fi

if want 12; then
section_start
echo "== 12. memory after bulk loading"
python3 -c "print(f'RssAnon after loading {$BIG_MB} MB in batches of 250: {$anon_loaded/1024:.1f} MiB, 5 s later {$anon_loaded_later/1024:.1f} MiB')"
[ -n "${anon_mid:-}" ] && python3 -c "print(f'RssAnon after loading {$MID_MB} MB more in batches of 1000: {$anon_mid/1024:.1f} MiB, 5 s later {$anon_mid_later/1024:.1f} MiB')"
echo "daemon peak RSS (VmHWM, whole run, file-backed mmap pages included): $(awk '/VmHWM/ {print int($2/1024)}' /proc/$pid/status) MiB"
section_peak 12
fi

if want 10; then
section_start
echo "== 10. S3: stored snapshots streamed to and from an S3-compatible server"
venv=$PWD/target/moto-venv
if ! "$venv/bin/python" -c 'import moto.server, boto3' 2>/dev/null; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q 'moto[server]==5.2.5'
fi
s3_port=$(free_port)
"$venv/bin/python" -m moto.server -H 127.0.0.1 -p "$s3_port" >/dev/null 2>&1 &
moto_pid=$!
for _ in $(seq 1 200); do (echo >/dev/tcp/127.0.0.1/$s3_port) 2>/dev/null && break; sleep 0.1; done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1
s3py() { "$venv/bin/python" -c "
import boto3, sys, time
from boto3.s3.transfer import TransferConfig
s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:$s3_port')
cfg = TransferConfig(multipart_chunksize=8 << 20, multipart_threshold=8 << 20, max_concurrency=4)
$1"; }
s3py "s3.create_bucket(Bucket='bench')"
# The archive the plain client uploads: the big collection's live snapshot.
cp "$mnt/live/big.snapshot" "$work/big-s3.snapshot"
# Restart the daemon on the same data with S3 as the snapshot storage.
stop_daemon "$pid" "$mnt"
SNAPFS__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE=s3 \
SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__BUCKET=bench \
SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__REGION=us-east-1 \
SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__ENDPOINT_URL="http://127.0.0.1:$s3_port" \
SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__ACCESS_KEY=bench \
SNAPFS__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__SECRET_KEY=bench-secret \
SNAPFS_LOG=warn "$BIN" serve --data-dir "$work/data" --mount "$mnt" 2>"$work/daemon-s3.log" &
pid=$!
echo "$pid" >"$work/daemon.pid"
wait_daemon "$SNAPFS_SOCKET" "$mnt" || true
sleep 1
anon_idle=$(rss_anon)
sample_rss_anon "$pid" "$work/anon-s3.log" 0.05
c0=$(now)
created=$(curl -s --unix-socket "$SNAPFS_SOCKET" -X POST "$url/collections/big/snapshots?wait=true")
c1=$(now)
stop_sampler
anon_create=$(sort -n "$work/anon-s3.log" | tail -1)
name=$(echo "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["name"])')
size=$(echo "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["size"])')
ref_up=$(s3py "t=time.time(); s3.upload_file('$work/big-s3.snapshot', 'bench', 'ref/big.snapshot', Config=cfg); print(f'{time.time()-t:.3f}')")
create=$(secs "$c0" "$c1")
python3 -c "print(f'create into S3: {$size/1e6:.0f} MB in {$create} s ({$size/1e6/$create:.0f} MB/s); boto3 upload_file of {$(stat -c %s "$work/big-s3.snapshot")/1e6:.0f} MB: {$ref_up} s; ratio {$create/$ref_up:.2f}; RssAnon idle {$anon_idle/1024:.1f} MiB, peak while creating {$anon_create/1024:.1f} MiB')"
ref_get=$(s3py "
import io
class Null(io.RawIOBase):
    def writable(self): return True
    def write(self, b): return len(b)
t=time.time(); s3.download_fileobj('bench', 'big/$name', Null(), Config=cfg); print(f'{time.time()-t:.3f}')")
h0=$(now); curl -s --unix-socket "$SNAPFS_SOCKET" "$url/collections/big/snapshots/$name" -o /dev/null; h1=$(now)
sample_rss_anon "$pid" "$work/anon-s3cp.log" 0.05
m0=$(now); cp "$mnt/collections/big/snapshots/$name" /dev/null; m1=$(now)
stop_sampler
anon_cp=$(sort -n "$work/anon-s3cp.log" | tail -1)
http=$(secs "$h0" "$h1"); cpm=$(secs "$m0" "$m1")
python3 -c "print(f'download from S3: HTTP GET {$http} s, cp out of the mount {$cpm} s (RssAnon peak {$anon_cp/1024:.1f} MiB); boto3 download_fileobj {$ref_get} s; ratios {$http/$ref_get:.2f} and {$cpm/$ref_get:.2f}')"
section_peak 10
fi
