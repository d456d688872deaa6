#!/usr/bin/env bash
# A/B of two snapfs binaries on the same data: one collection restored from
# ARCHIVE, then each binary in turn (ROUNDS rounds, alternating) serves it while
#   - a live shard snapshot is streamed over HTTP three times (curl to /dev/null),
#     next to `tar -cf - <shard> | cat`;
#   - a new live state (one point upserted) is copied out of the mount twice, then
#     its `.sha256` read, next to `cat` of a plain file of the same size.
# Used to decide between two mechanisms when a full bench run is too noisy.
#
#   scripts/ab_live.sh BIN_A BIN_B ARCHIVE [ROUNDS]   (ARCHIVE.checksum beside it;
#                                                     DIM: its vector size, 1024)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
a_bin=$(realpath "$1"); b_bin=$(realpath "$2"); archive=$(realpath "$3"); rounds=${4:-3}
work=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-ab.XXXXXX")
export SNAPFS_SOCKET=$work/data/snapfs.sock SNAPFS_API_KEY=ab
pid=
trap 'stop_daemon "$pid" "$work/mnt"; rm -rf "$work"' EXIT
start() {
  "$1" serve --data-dir "$work/data" --mount "$work/mnt" 2>>"$work/log" &
  pid=$!
  wait_daemon "$SNAPFS_SOCKET" "$work/mnt" || true
}
stop() { stop_daemon "$pid" "$work/mnt"; pid=; }
start "$a_bin"
"$a_bin" recover ab "$archive" --checksum "$(cat "$archive.checksum")" >/dev/null
sleep 10
# The plain file is as large as the live file the copies read.
head -c "$(stat -c %s "$work/mnt/live/ab.snapshot")" /dev/urandom >"$work/plain.bin"
stop
n=0
for _ in $(seq 1 "$rounds"); do
  for which in A B; do
    bin=$a_bin; [ $which = B ] && bin=$b_bin
    start "$bin"
    url=http://l/collections/ab/shards/0/snapshot
    curl -s --unix-socket "$SNAPFS_SOCKET" $url -o /dev/null
    stream=""
    for _ in 1 2 3; do stream="$stream $(curl -s --unix-socket "$SNAPFS_SOCKET" $url -o /dev/null -w '%{time_total}')"; done
    t0=$(now); tar -cf - -C "$work/data/storage/collections/ab" 0 | cat >/dev/null; t1=$(now)
    cp "$work/mnt/live/ab.snapshot" /dev/null
    copies=""
    for _ in 1 2; do
      n=$((n + 1))
      "$bin" points generate ab --count 1 --dim "${DIM:-1024}" --batch 1 --start $((990000000 + n)) >/dev/null
      sleep 2
      stat "$work/mnt/live/ab.snapshot" >/dev/null
      c0=$(now); cp "$work/mnt/live/ab.snapshot" /dev/null; c1=$(now)
      head -c 64 "$work/mnt/live/ab.snapshot.sha256" >/dev/null; c2=$(now)
      copies="$copies cp $(secs "$c0" "$c1") (.sha256 then $(secs "$c1" "$c2"))"
    done
    k0=$(now); cat "$work/plain.bin" >/dev/null; k1=$(now)
    echo "$which: HTTP stream$stream s, tar -cf|cat $(secs "$t0" "$t1") s; new state:$copies; cat $(secs "$k0" "$k1") s"
    stop
  done
done
