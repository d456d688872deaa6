#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (Debian
# packages; a Python virtualenv with qdrant-client is made by the tests themselves;
# the user `snapfs-test` for the non-root mount test), then builds and runs every
# test. CI runs exactly this (.ci/run). The mount tests need /dev/fuse and root
# (they mount without fusermount), one of them as `snapfs-test` through fusermount3.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v cc >/dev/null || missing+=(build-essential)
command -v g++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)   # jemalloc's build
# The mount tests drive real tools against the mount.
command -v rsync >/dev/null || missing+=(rsync)
command -v curl >/dev/null || missing+=(curl)
# Recovery from https:// URLs is tested against a local server with its own CA.
command -v openssl >/dev/null || missing+=(openssl)
# The repository store's tests read, check, dump and prune its repositories with the
# restic CLI.
command -v restic >/dev/null || missing+=(restic)
# A daemon run as an ordinary user mounts through fusermount3 (the fuse3 package).
command -v fusermount3 >/dev/null || missing+=(fuse3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The non-root mount test runs the daemon as this ordinary user; like any user of a
# desktop Linux, it may open /dev/fuse (mode 0666, as udev leaves it there). The
# shared-mount test (--allow-other --group) needs a member of the group and this
# user, who is not one.
if [ "$(id -u)" -eq 0 ]; then
  id snapfs-test >/dev/null 2>&1 || useradd --create-home --shell /bin/sh snapfs-test || true
  getent group snapfs-test-ops >/dev/null || groupadd snapfs-test-ops || true
  id snapfs-test-member >/dev/null 2>&1 \
    || useradd --no-create-home --shell /bin/sh --groups snapfs-test-ops snapfs-test-member || true
  if [ -c /dev/fuse ]; then chmod 0666 /dev/fuse || true; fi
fi

command -v cargo >/dev/null || { echo "cargo is required (install Rust with rustup)"; exit 1; }

# The package test builds the Debian package with cargo-deb (scripts/package.sh) and
# installs it with dpkg; on a machine without dpkg it is skipped, so is the install.
if command -v dpkg >/dev/null && ! cargo deb --version >/dev/null 2>&1; then
  echo "installing cargo-deb"
  cargo install --locked cargo-deb --version 3.8.0 || echo "cargo-deb did not install: the package test will be skipped"
fi

# Every target: the library's and the binary's unit tests, the one integration test
# binary (tests/integration/) and the soak (tests/soak.rs, 40 s; SOAK_SECS for longer).
# The crash and race tests need the daemon's failpoints (a cargo feature release
# builds leave out). Integration tests start several daemons at once; two test
# threads fit a 2-core machine. docs/TESTING.md has the layout and how to run one area.
# --locked: Cargo.lock is the one `cargo install --locked` and the package build use.
cargo test --locked --all-targets --features failpoints -- --test-threads="${SNAPFS_TEST_THREADS:-2}"
