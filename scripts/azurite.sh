#!/usr/bin/env bash
# Install Azurite (the Azure Storage emulator) for the `azure` backend's tests, into
# target/azurite (git-ignored), unless it is there already. The tests start it themselves:
#
#     scripts/azurite.sh && cargo test --features azure --test azure
#
# Prints the path of the azurite-blob binary. Needs Node.js 20+ and npm; Azurite 3.35.0 is
# the last release that runs on Node 20 (3.36+ needs Node 22).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=3.35.0
DIR="${AZURITE_DIR:-$PWD/target/azurite}"
BIN="$DIR/node_modules/.bin/azurite-blob"

installed_version() {
  node -e "console.log(require('$DIR/node_modules/azurite/package.json').version)" 2>/dev/null || true
}

if [ -x "$BIN" ] && [ "$(installed_version)" = "$VERSION" ]; then
  echo "$BIN"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "scripts/azurite.sh: npm is missing; install Node.js 20+ (apt-get install nodejs npm)" >&2
  exit 1
fi

mkdir -p "$DIR"
[ -f "$DIR/package.json" ] || echo '{"name":"managedblob-azurite","private":true}' > "$DIR/package.json"
echo "scripts/azurite.sh: installing azurite@$VERSION into $DIR" >&2
npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "azurite@$VERSION" >&2
echo "$BIN"
