#!/usr/bin/env bash
# The Python package's tests: a venv from /usr/bin/python3 (Debian's, whose sqlite3 loads
# extensions), `pip install ./python` (builds the loadable extension in release into the
# wheel), pytest, sqlite-vec and datasette from PyPI, then pytest over python/tests.
#
# Usage: python/test.sh [pytest args]
#
# The wheel build runs cargo on loadable/Cargo.toml with its default target dir
# (loadable/target, or $CARGO_TARGET_DIR), so after scripts/test.sh's
# `cargo build --release --manifest-path loadable/Cargo.toml` nothing is compiled twice.
# The Azurite tests find Azurite at $AZURITE_BLOB or target/azurite (scripts/azurite.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=/usr/bin/python3
VENV="${MANAGEDBLOB_PYTHON_VENV:-python/.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac

if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  echo "== installing python3-venv"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
fi

echo "== python: venv $VENV from $PYTHON"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet pytest sqlite-vec datasette
echo "== python: pip install ./python (release build of the extension)"
"$VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps ./python

echo "== python: pytest"
cd python
exec "$VENV/bin/python" -m pytest -q "$@"
