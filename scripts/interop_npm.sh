#!/usr/bin/env bash
# Installs the third-party ECHONET Lite device the interop tests read (KAIT's `echonet-lite`, npm) into
# ./.interop/node (git-ignored).  The library uses `date-utils` without declaring it, so both are
# installed.  Run by scripts/test.sh when npm is present, and by the test itself if it finds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
target=.interop/node
if [ -f "$target/node_modules/echonet-lite/package.json" ] && [ -f "$target/node_modules/date-utils/package.json" ]; then
  exit 0
fi
mkdir -p "$target"
npm install --prefix "$target" --no-save --no-audit --no-fund --loglevel=error \
  echonet-lite@2.16.2 date-utils@1.2.21 >&2
