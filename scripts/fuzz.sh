#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each in turn for SECONDS_PER_TARGET
# seconds (default 60), starting from the committed seeds (fuzz/seeds/<target>/) and the
# corpus earlier runs grew (fuzz/corpus/<target>/, not committed). Findings go to
# fuzz/artifacts/<target>/, each run's output to fuzz/logs/<target>.log. See
# docs/TESTING.md ("Fuzzing").
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Environment: SANITIZER (address, the default; `none` builds and runs faster).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(unpack sparse_map range manifest sidecar)
sanitizer="${SANITIZER:-address}"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz

# cargo-fuzz passes unstable rustc flags (-Zsanitizer, sanitizer coverage), and qdrant-edge
# needs `feature(assert_matches)` (see .cargo/config.toml, whose build.rustflags the
# RUSTFLAGS set here replace): a stable toolchain runs them with RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Zcrate-attr=feature(assert_matches)${RUSTFLAGS:+ $RUSTFLAGS}"
# The same options for build and run, or `run` rebuilds: optimized, with debug
# assertions and overflow checks, 16 codegen units (the dependency tree is large).
opts=(-O --debug-assertions --codegen-units 16 --sanitizer "$sanitizer")

cargo fuzz build "${opts[@]}"

max_len() {
  case "$1" in
    unpack) echo 1048576 ;;
    *) echo 65536 ;;
  esac
}

mkdir -p logs
failed=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "== $target: ${seconds}s"
  # New inputs go to the first directory; the seeds are only read. libFuzzer's -timeout
  # is per input; `timeout` bounds the whole run.
  set +e
  timeout --kill-after=60 $((seconds + 600)) \
    cargo fuzz run "${opts[@]}" "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len="$(max_len "$target")" \
    -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 \
    >"logs/$target.log" 2>&1
  status=$?
  set -e
  grep -E '^#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|^Done' "logs/$target.log" || true
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    echo "!! $target found something: see logs/$target.log and artifacts/$target/"
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "findings: ${failed[*]}"
  exit 1
fi
echo "no findings"
