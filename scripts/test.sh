#!/usr/bin/env bash
# The README's test command: sets up everything the tests need on a fresh machine, then runs them.
#   - a virtual environment in ./.venv with the project and its dev extras (editable install)
#   - a real InfluxDB 2.x server binary (built once from the Go proxy + crates.io, then cached)
#   - PostgreSQL's server binaries (Debian's postgresql package) for the access-database tests
#   - Debian's chromium + Playwright for the browser tests (when apt is available)
#   - KAIT's echonet-lite (npm) in ./.interop, a third-party ECHONET Lite device for the interop tests
#   - ruff check and mypy (both must be clean)
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k echonet
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== python dependencies (./.venv)" >&2
source scripts/venv.sh dev

if [ -f scripts/ci_influxdb.sh ]; then
  echo "== influxd 2.x" >&2
  line=$(bash scripts/ci_influxdb.sh | tail -n 1 || true)
  case "$line" in
    INFLUXD_BIN=*) export INFLUXD_BIN="${line#INFLUXD_BIN=}"; echo "using $INFLUXD_BIN" >&2 ;;
    *) echo "influxd not available: the InfluxDB tests will be reported as skipped" >&2 ;;
  esac
fi

if [ -f scripts/ci_postgres.sh ]; then
  echo "== postgresql" >&2
  line=$(bash scripts/ci_postgres.sh | tail -n 1 || true)
  case "$line" in
    PG_BIN=*) export PG_BIN="${line#PG_BIN=}"; echo "using $PG_BIN" >&2 ;;
    *) echo "PostgreSQL not available: the PostgreSQL tests will be reported as skipped" >&2 ;;
  esac
fi

if [ -f scripts/ci_browser.sh ]; then
  echo "== chromium + playwright" >&2
  bash scripts/ci_browser.sh || echo "browser not available: the browser tests will be reported as skipped" >&2
fi

echo "== third-party ECHONET Lite device (npm)" >&2
if command -v npm >/dev/null 2>&1; then
  bash scripts/interop_npm.sh
else
  echo "npm not available: the KAIT device interop test will be reported as skipped" >&2
fi

echo "== ruff and mypy" >&2
ruff check .
mypy

echo "== tests" >&2
python -m pytest "$@"
