#!/usr/bin/env bash
# CI step before the tests: make PostgreSQL's server binaries (initdb, postgres) available, or explain
# why not.  The tests start their own throwaway server from them (tests/pg_server.py): in a temporary
# directory, on a free loopback port, as the user 'nobody' when run as root (PostgreSQL refuses root;
# HEMS_PG_RUN_AS names another user).
#
# On success the LAST line on stdout is `PG_BIN=<directory with initdb and postgres>` (the caller
# exports it).  On failure the last line is `PG_UNAVAILABLE: <reason>` and the exit status is still 0:
# the PostgreSQL tests then report themselves as skipped (or fail, if the job sets
# CI=true HEMS_REQUIRE_POSTGRES=1).
#
# Lookup: $PG_BIN; else the newest Debian /usr/lib/postgresql/<version>/bin; else `pg_config --bindir`.
# When none has them and apt-get is there, Debian's `postgresql` package is installed (as root, or
# through `sudo -n` when a non-root user may: nothing prompts for a password).  Its server binaries
# land in /usr/lib/postgresql/<version>/bin, not on the PATH; recommended extras are left out.  On a
# machine that runs services the package also starts its own cluster on port 5432, which the tests
# leave alone.
set -uo pipefail

unavailable() {
    echo "ci_postgres: PostgreSQL not available: $*" >&2
    echo "PG_UNAVAILABLE: $*"
    exit 0
}

has_server() { [ -x "$1/initdb" ] && [ -x "$1/postgres" ]; }

find_bin() {
    if [ -n "${PG_BIN:-}" ] && has_server "$PG_BIN"; then
        echo "$PG_BIN"
        return 0
    fi
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4 -V -r); do
        if has_server "$dir"; then
            echo "$dir"
            return 0
        fi
    done
    if command -v pg_config >/dev/null 2>&1; then
        dir="$(pg_config --bindir 2>/dev/null)"
        if [ -n "$dir" ] && has_server "$dir"; then
            echo "$dir"
            return 0
        fi
    fi
    return 1
}

if ! bin="$(find_bin)"; then
    command -v apt-get >/dev/null 2>&1 || unavailable "no initdb/postgres found and no apt-get to install them"
    as_root=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null ||
            unavailable "no initdb/postgres found; installing Debian's postgresql needs root (or sudo without a password)"
        as_root=(sudo -n)
    fi
    echo "ci_postgres: installing Debian's postgresql package" >&2
    started=$(date +%s)
    {
        "${as_root[@]}" apt-get update -qq &&
            "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends postgresql
    } >&2 || unavailable "apt-get install postgresql failed"
    echo "ci_postgres: installed in $(( $(date +%s) - started )) s" >&2
    bin="$(find_bin)" || unavailable "postgresql installed but no /usr/lib/postgresql/*/bin has initdb and postgres"
fi
echo "ci_postgres: using $bin ($("$bin/postgres" --version 2>/dev/null))" >&2
echo "PG_BIN=$bin"
