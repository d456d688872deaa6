#!/usr/bin/env bash
# Restore one archive ROUNDS times on a fresh daemon, through recover/ (cp, with the
# sidecar written first) and over HTTP (`snapfs recover --checksum`), each until the
# collection answers, next to `tar -xf` of the same cached archive; then the
# daemon's phase lines (received / checked / switched). A quieter view of the
# restore than scripts/bench.sh section 8, whose daemon has served everything else.
#
#   scripts/restore_probe.sh ARCHIVE [ROUNDS]    (ARCHIVE.checksum beside it: its SHA-256)
set -euo pipefail
archive=$(realpath "$1")
rounds=${2:-3}
cd "$(dirname "$0")/.."
. scripts/lib.sh
cargo build --release --quiet
BIN=$PWD/target/release/snapfs
sum=$(cat "$archive.checksum")
work=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-probe.XXXXXX")
export SNAPFS_SOCKET=$work/data/snapfs.sock SNAPFS_API_KEY=probe
SNAPFS_LOG=warn,snapfs::snapshot::restore=info "$BIN" serve --data-dir "$work/data" --mount "$work/mnt" 2>"$work/log" &
pid=$!
trap 'stop_daemon "$pid" "$work/mnt"; rm -rf "$work"' EXIT
wait_daemon "$SNAPFS_SOCKET" "$work/mnt" || true
expected=
# Each restore must answer with the archive's points, or its time means nothing.
check() {
  local got; got=$(points_count "$1")
  if [ -z "$expected" ]; then expected=$got; fi
  [ "$got" = "$expected" ] || { echo "restore $1 answered $got points, expected $expected" >&2; exit 1; }
}
for _ in $(seq 1 "$rounds"); do
  cat "$archive" >/dev/null
  mkdir -p "$work/untar"; a=$(now); tar -xf "$archive" -C "$work/untar"; b=$(now); rm -rf "$work/untar"; sync
  printf '%s  r.snapshot\n' "$sum" >"$work/mnt/recover/r.snapshot.sha256"
  cat "$archive" >/dev/null
  c=$(now); cp "$archive" "$work/mnt/recover/r.snapshot"; check r; d=$(now)
  cat "$archive" >/dev/null
  e=$(now); "$BIN" recover h "$archive" --checksum "$sum" >/dev/null; check h; f=$(now)
  python3 -c "print(f'tar -xf {$b-$a:.3f} s; cp into recover/ {$d-$c:.3f} s ({($d-$c)/($b-$a):.2f}x); HTTP upload {$f-$e:.3f} s ({($f-$e)/($b-$a):.2f}x)')"
  for c in r h; do curl -s --unix-socket "$SNAPFS_SOCKET" -X DELETE "http://l/collections/$c" >/dev/null; done
done
sed 's/\x1b\[[0-9;]*m//g' "$work/log" | grep ' restored ' | grep -o 'collection="[^"]*".*switched_ms=[0-9]*' | sed 's/sha256=[0-9a-f]* //'
