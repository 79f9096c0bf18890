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
# When none has them and we are root with apt-get, Debian's `postgresql` package is installed (the
# server binaries land in /usr/lib/postgresql/<version>/bin, not on the PATH).
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
    [ "$(id -u)" = 0 ] || unavailable "no initdb/postgres found; installing Debian's postgresql needs root"
    echo "ci_postgres: installing Debian's postgresql package" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >&2 ||
        unavailable "apt-get install postgresql failed"
    bin="$(find_bin)" || unavailable "postgresql installed but no /usr/lib/postgresql/*/bin has initdb and postgres"
fi
echo "ci_postgres: using $bin ($("$bin/postgres" --version 2>/dev/null))" >&2
echo "PG_BIN=$bin"
