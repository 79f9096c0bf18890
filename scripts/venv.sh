#!/usr/bin/env bash
# Sourced by demo.sh and test.sh: make (once) and activate the project's virtual environment in ./.venv.
# Debian refuses `pip install` into the system Python (PEP 668, "externally-managed-environment"), and
# its python3 ships without the venv module until python3-venv is installed, so both are handled here.
# Usage: source scripts/venv.sh [extras]   e.g. `source scripts/venv.sh dev`
hems_venv_extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
    if ! python3 -m venv .venv 2>/dev/null; then
        rm -rf .venv
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            echo "== installing Debian's python3-venv (python3 has no venv module)" >&2
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv .venv
        else
            echo "python3 cannot make a virtual environment: install python3-venv (apt-get install python3-venv)" >&2
            exit 2
        fi
    fi
fi
# shellcheck disable=SC1091
source .venv/bin/activate
if [ -n "$hems_venv_extras" ]; then
    python -m pip install -q -e ".[$hems_venv_extras]"
else
    python -m pip install -q -e .
fi
