#!/usr/bin/env bash
# CI step before the tests: make a real influxd 2.x available, or explain why not.
#
# On success the LAST line on stdout is `INFLUXD_BIN=<absolute path>` (the caller exports it).
# On failure the last line is `INFLUXD_UNAVAILABLE: <reason>` and the exit status is still 0:
# the InfluxDB tests then report themselves as skipped (or fail, if the job sets
# CI=true HEMS_REQUIRE_INFLUXDB=1). Nothing is exported from here.
#
# Env: INFLUXD_BUILD_TIMEOUT (default 40m), plus everything scripts/influxdb.sh reads.
set -uo pipefail
cd "$(dirname "$0")/.." || { echo "INFLUXD_UNAVAILABLE: cannot enter the repository"; exit 0; }

unavailable() {
    echo "ci_influxdb: influxd 2.x not available: $*" >&2
    echo "INFLUXD_UNAVAILABLE: $*"
    exit 0
}

# The build needs the real pkg-config for libflux; CI runs as root on Debian.
if ! command -v pkg-config >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "ci_influxdb: installing the Debian pkg-config package" >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config; } >&2 ||
            echo "ci_influxdb: apt-get install pkg-config failed" >&2
    fi
fi

limit="${INFLUXD_BUILD_TIMEOUT:-40m}"
errlog="$(mktemp)"
trap 'rm -f "$errlog"' EXIT
start=$(date +%s)
# Progress stays visible in the CI log (a cold build is long) and is kept to quote the cause.
out="$(timeout --kill-after=30s "$limit" bash scripts/influxdb.sh 2> >(tee "$errlog" >&2))"
rc=$?
took=$(($(date +%s) - start))
sleep 0.2 # let tee flush the last line
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    unavailable "scripts/influxdb.sh exceeded $limit (a rerun resumes the build from its caches)"
fi
if [ "$rc" != 0 ]; then
    cause="$(grep -E 'ERROR|error' "$errlog" | tail -n 1)"
    unavailable "scripts/influxdb.sh failed with exit $rc after ${took}s: ${cause:-see its output above}"
fi
bin="$(printf '%s\n' "$out" | tail -n 1)"
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    unavailable "scripts/influxdb.sh printed no executable path (got '$bin')"
fi
echo "ci_influxdb: using $bin (${took}s)" >&2
echo "INFLUXD_BIN=$bin"
