#!/usr/bin/env bash
# The README's main command: installs the project (in ./.venv) and runs the demo household on the embedded store.
# Extra arguments go to `hems demo`, e.g. ./scripts/demo.sh --homes 3 --speed 60
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh   # ./.venv: Debian refuses pip into the system Python
exec hems demo "$@"
