#!/usr/bin/env bash
# Following a Qdrant cluster (issue 24), every figure beside a reference measured in
# the same run (scripts/bench_follow.py has the details): a real 3-node Qdrant 1.18.3
# cluster holding POINTS x DIM vectors (default 262,144 x 1024 = 1 GiB) over 3 shards;
# snapfs follows it into a restic repository. After (a) 1% of new points appended and
# (b) 1% of the points updated, spread over the ids, one round each: bytes moved over
# the network and seconds against downloading a full snapshot of every shard, bytes
# added to the repository against `restic backup` of those full archives, and the
# disk the Qdrant nodes needed meanwhile against what a stored full shard snapshot
# takes there.
#
# Usage: scripts/bench-follow.sh   (env: POINTS=262144, DIM=1024, QDRANT_BIN, SNAPFS_BIN
# to skip the build). Needs the Qdrant binary (../shared/bin/ or QDRANT_BIN) and the
# Python clients (scripts/test.sh makes target/py-venv). Figures go to
# docs/BENCHMARKS.md; nothing here is a pass/fail test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
POINTS=${POINTS:-262144}
DIM=${DIM:-1024}
command -v restic >/dev/null || apt-get install -y -qq --no-install-recommends restic >/dev/null
qdrant_binary
bench_python
snapfs_binary
work=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-bench-follow.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$PY" scripts/bench_follow.py "$BIN" "$QDRANT_BIN" "$work/run" "$POINTS" "$DIM"
