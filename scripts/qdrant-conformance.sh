#!/usr/bin/env bash
# Run Qdrant's own REST snapshot tests against snapfs, unmodified:
# tests/openapi/test_snapshot.py and tests/openapi/test_shard_snapshot.py of a
# Qdrant checkout (v1.18.3, the release snapfs follows).
#
#   scripts/qdrant-conformance.sh QDRANT_CHECKOUT [PYTEST_ARGS...]
#
# QDRANT_CHECKOUT holds at least tests/openapi and docs/redoc (the OpenAPI spec the
# tests validate every answer against), e.g. made from a clone:
#   git clone --depth 1 --branch v1.18.3 https://github.com/qdrant/qdrant /tmp/qdrant
#
# Builds nothing: it runs target/debug/snapfs (or $SNAPFS_BIN). Makes a virtualenv
# with the tests' Python dependencies (pinned as in Qdrant's tests/uv.lock) at
# target/conformance-venv (or $CONFORMANCE_VENV) if it is missing. Starts snapfs on
# a temporary data dir with a TCP listener on a free loopback port and an API key;
# the tests reach it through their own settings (QDRANT_HOST, and
# QDRANT_HOST_HEADERS for the api-key header). Exits with pytest's status; the
# daemon and the data dir are removed on every exit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if [[ $# -lt 1 || ! -d "$1" ]]; then
    echo "usage: $0 QDRANT_CHECKOUT [PYTEST_ARGS...]" >&2
    exit 2
fi
QDRANT=$(cd "$1" && pwd)
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SNAPFS_BIN:-$ROOT/target/debug/snapfs}
VENV=${CONFORMANCE_VENV:-$ROOT/target/conformance-venv}
TESTS=(tests/openapi/test_snapshot.py tests/openapi/test_shard_snapshot.py)

for f in "${TESTS[@]}" tests/openapi/conftest.py docs/redoc/master/openapi.json; do
    if [[ ! -f "$QDRANT/$f" ]]; then
        echo "$QDRANT/$f is missing: is $QDRANT a Qdrant checkout?" >&2
        exit 2
    fi
done
if [[ ! -x "$BIN" ]]; then
    echo "$BIN not found: run cargo build first (or set SNAPFS_BIN)" >&2
    exit 2
fi

# The tests' dependencies, at the versions of Qdrant v1.18.3's tests/uv.lock
# (pytest-xdist: tests/pyproject.toml's addopts use --dist).
PACKAGES=(pytest==8.4.2 pytest-timeout==2.4.0 pytest-xdist==3.8.0 requests==2.34.0
    schemathesis==3.39.16 jsonschema==4.26.0 retry==0.9.2)
if ! "$VENV/bin/python" -c 'import pytest, pytest_timeout, xdist, requests, schemathesis, jsonschema, retry' 2>/dev/null; then
    echo "making $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/snapfs-conformance.XXXXXX")
PID=
cleanup() {
    stop_daemon "$PID" "" 30
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PORT=$(free_port)
KEY=conformance-$RANDOM$RANDOM
LOG=$WORK/snapfs.log

# CONFORMANCE_STORE=repository: stored snapshots as generations of a restic
# repository in the work dir (the store issue 22 added) instead of plain files.
STORE_ENV=()
if [[ "${CONFORMANCE_STORE:-local}" == repository ]]; then
    echo "conformance-password" >"$WORK/repo-password"
    STORE_ENV=(SNAPFS__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE=repository
        SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__LOCATION="$WORK/repo"
        SNAPFS__STORAGE__SNAPSHOTS_CONFIG__REPOSITORY__PASSWORD_FILE="$WORK/repo-password")
fi

env "${STORE_ENV[@]}" SNAPFS_API_KEY=$KEY "$BIN" serve --data-dir "$WORK/data" --http "127.0.0.1:$PORT" \
    >"$LOG" 2>&1 </dev/null &
PID=$!

URL=http://127.0.0.1:$PORT
for _ in $(seq 1 600); do
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "snapfs exited at start; its log:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    if curl --silent --fail --output /dev/null -H "api-key: $KEY" "$URL/collections"; then
        break
    fi
    sleep 0.2
done
curl --silent --fail --output /dev/null -H "api-key: $KEY" "$URL/collections" || {
    echo "snapfs did not answer on $URL; its log:" >&2
    cat "$LOG" >&2
    exit 1
}
echo "snapfs $("$BIN" --version 2>/dev/null | head -n1) on $URL, data in $WORK/data"

status=0
(
    cd "$QDRANT"
    # Nothing is written into the checkout (no .pytest_cache, no __pycache__).
    QDRANT_HOST=$URL QDRANT_HOST_HEADERS="{\"api-key\": \"$KEY\"}" PYTHONDONTWRITEBYTECODE=1 \
        "$VENV/bin/python" -m pytest -p no:cacheprovider "${TESTS[@]}" "$@"
) || status=$?

if [[ $status -ne 0 && -n "${CONFORMANCE_SHOW_LOG:-}" ]]; then
    echo "---- snapfs log ----"
    cat "$LOG"
fi
exit $status
