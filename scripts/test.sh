#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need (Debian
# packages, Azurite from npm), builds the loadable extension, runs every test, the
# Azurite ones included (they start and stop Azurite themselves).
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# The tests run Debian's shell by path (/usr/bin/sqlite3), not any sqlite3 on PATH.
[ -x /usr/bin/sqlite3 ] || need_apt+=(sqlite3)
# hostile.rs: mount/umount (small tmpfs, read-only bind mount), chattr (immutable dir).
command -v mount >/dev/null 2>&1 || need_apt+=(mount)
command -v chattr >/dev/null 2>&1 || need_apt+=(e2fsprogs)
[ -x /usr/bin/python3 ] || need_apt+=(python3)
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
dpkg -s libsqlite3-dev >/dev/null 2>&1 || need_apt+=(libsqlite3-dev)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

echo "== installing Azurite"
scripts/azurite.sh >/dev/null

echo "== building the loadable extension"
cargo build --release --manifest-path loadable/Cargo.toml
export MANAGEDBLOB_EXTENSION="$PWD/loadable/target/release/libmanagedblob.so"

echo "== running the tests"
cargo test --features azure "$@"

echo "== the README's main job (examples/two_hosts.rs on the embedded default)"
# With the test build's features, so nothing is rebuilt; the remote is a local
# directory either way, as with the README's plain `cargo run --example two_hosts`.
cargo run --features azure --example two_hosts

echo "== the log subscriber's unit tests (feature log-subscriber, which the extension and CLI enable)"
cargo test --features log-subscriber --lib logging

echo "== running the managedblob CLI tests"
AZURITE_BLOB="${AZURITE_BLOB:-$PWD/target/azurite/node_modules/.bin/azurite-blob}" cargo test -p managedblob-cli

echo "== the Python package (python/test.sh: venv, pip install ./python, pytest)"
python/test.sh

echo "== the remote bench's quick form (local and Azurite), and every bench builds"
AZURITE_BLOB="${AZURITE_BLOB:-$PWD/target/azurite/node_modules/.bin/azurite-blob}" \
  cargo test --features azure --bench remote
# Every bench compiles. With the dev profile: the release profile would rebuild every
# dependency (minutes on 2 cores, past CI's ~10 minute budget) for the same code.
cargo bench --no-run --features azure --profile dev
