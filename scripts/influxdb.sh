#!/usr/bin/env bash
# Find or build a real InfluxDB 2.x server binary (influxd) for the integration tests.
#
# Why a build: there is no Docker here and no download site for release binaries, only the
# package registries. influxd 2.x builds from the Go module proxy plus the Rust crate registry
# (Flux's parser, libflux, is a Rust static library linked through cgo + pkg-config).
#
# Contract:
#   stdout: ONLY the absolute path of a working influxd 2.x (progress and errors go to stderr).
#   Search order: $INFLUXD_BIN, `influxd` on PATH (if it reports 2.x), the cache
#   ${HEMS_CACHE:-$HOME/.cache/hems}/influxd-$INFLUX_VER/bin/influxd; otherwise build into that cache.
#   Exit status non-zero (with the missing tool named) when no binary can be found or built.
#   Idempotent and resumable: every step skips work whose output already exists, cargo and
#   go build reuse their own caches, and a lock file keeps two runs from building at once.
#
# Env: INFLUX_VER (default v2.9.1), HEMS_CACHE, INFLUXD_BIN, RUSTUP_TOOLCHAIN (default stable),
#      INFLUXD_BUILD_ROUTE (auto|A|B; default auto = A, then B if A's link step fails).
set -euo pipefail

# Everything except the final path goes to stderr.
exec 3>&1 1>&2

INFLUX_VER="${INFLUX_VER:-v2.9.1}"
CACHE_ROOT="${HEMS_CACHE:-$HOME/.cache/hems}"
PREFIX="$CACHE_ROOT/influxd-$INFLUX_VER"
ROUTE="${INFLUXD_BUILD_ROUTE:-auto}"

log() { printf '[influxdb.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Print the binary's path on the real stdout and stop.
found() { printf '%s\n' "$1" >&3; exit 0; }

# True when $1 runs and reports an InfluxDB 2.x version.
is_influxd2() {
    local out
    [ -x "$1" ] || return 1
    out="$("$1" version 2>/dev/null)" || return 1
    case "$out" in *" v2."* | *" 2."*) return 0 ;; *) return 1 ;; esac
}

abs_path() { (cd "$(dirname "$1")" && printf '%s/%s\n' "$(pwd -P)" "$(basename "$1")"); }

# ---------------------------------------------------------------- look for an existing binary
if [ -n "${INFLUXD_BIN:-}" ]; then
    is_influxd2 "$INFLUXD_BIN" || die "INFLUXD_BIN=$INFLUXD_BIN is not a working influxd 2.x"
    found "$(abs_path "$INFLUXD_BIN")"
fi
if p="$(command -v influxd 2>/dev/null)" && is_influxd2 "$p"; then
    found "$(abs_path "$p")"
fi
if is_influxd2 "$PREFIX/bin/influxd"; then
    found "$PREFIX/bin/influxd"
fi

# ---------------------------------------------------------------- build prerequisites
missing=()
for t in go cargo gcc pkg-config python3; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
if [ "${#missing[@]}" -gt 0 ]; then
    hint=""
    case " ${missing[*]} " in *" pkg-config "*) hint=" (Debian: apt-get install -y pkg-config)" ;; esac
    die "cannot build influxd $INFLUX_VER: missing tool(s): ${missing[*]}$hint"
fi

# A future tag must never make go fetch a toolchain; cgo is required (sqlite, libflux).
export GOTOOLCHAIN=local CGO_ENABLED=1
export RUSTUP_TOOLCHAIN="${RUSTUP_TOOLCHAIN:-stable}"
# Not -modcacherw: the module cache must stay read-only so nothing writes build output into it.
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

mkdir -p "$PREFIX"/{src,bin,flux/lib,flux/include,tools}
cd "$PREFIX" # no foreign go.mod above the cwd

# One build at a time per cache dir; a second caller waits and then finds the binary.
exec 9>"$PREFIX/.lock"
if ! flock -n 9; then
    log "another build holds $PREFIX/.lock; waiting for it"
    flock 9
fi
if is_influxd2 "$PREFIX/bin/influxd"; then
    found "$PREFIX/bin/influxd"
fi

log "building influxd $INFLUX_VER into $PREFIX (cold build: 20-40 min on 2 cores)"

# Print the read-only module-cache directory of module@version (downloads it if needed).
moddir() {
    go mod download -json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
if d.get("Error"):
    sys.exit(d["Error"])
print(d["Dir"])'
}

# Copy a module to a writable place; the copy is complete only once the marker exists.
writable_copy() { # module@version dest
    local src dest="$2"
    [ -f "$dest/.copied" ] && return 0
    src="$(moddir "$1")" || die "go mod download $1 failed (is the Go module proxy reachable?)"
    rm -rf "$dest"
    cp -r "$src" "$dest"
    chmod -R u+w "$dest"
    touch "$dest/.copied"
}

# ---------------------------------------------------------------- 1) influxdb sources
SRC="$PREFIX/src/influxdb"
log "step 1: influxdb $INFLUX_VER sources"
writable_copy "github.com/influxdata/influxdb/v2@$INFLUX_VER" "$SRC"
FLUX_VER="$(cd "$SRC" && go list -m -f '{{.Version}}' github.com/influxdata/flux)"
log "influxdb $INFLUX_VER pins flux $FLUX_VER"

# ---------------------------------------------------------------- 2) flux sources, patched
FLUX="$PREFIX/src/flux"
log "step 2: flux $FLUX_VER sources (unpin rust toolchain, drop deny(warnings))"
writable_copy "github.com/influxdata/flux@$FLUX_VER" "$FLUX"
# The pinned old toolchain is not installed and must not be fetched.
rm -f "$FLUX/rust-toolchain.toml"
# The default 'strict' feature turns every new rustc lint into a build failure.
sed -i 's/^default = \["strict", /default = [/' "$FLUX/libflux/flux/Cargo.toml"
sed -i 's/^default = \["strict"\]/default = []/' "$FLUX/libflux/flux-core/Cargo.toml"
if grep -h '^default' "$FLUX/libflux/flux/Cargo.toml" "$FLUX/libflux/flux-core/Cargo.toml" | grep -q strict; then
    die "could not disable the 'strict' cargo feature in flux $FLUX_VER"
fi

build_libflux() {
    log "step 3a: cargo build libflux (release; rust: $(rustc --version))"
    (cd "$FLUX/libflux" && RUSTFLAGS="--cap-lints=warn ${RUSTFLAGS:-}" cargo build --release --locked)
}

# Fetch the ~270 Go modules influxd needs while cargo keeps the CPUs busy (network vs CPU bound).
# `go list` does not run cgo, so it needs no libflux yet.
prefetch_go_modules() {
    (cd "$SRC" && go list -deps ./cmd/influxd >/dev/null 2>"$PREFIX/go-prefetch.log") &
    PREFETCH_PID=$!
}
wait_go_modules() {
    wait "$PREFETCH_PID" || log "go module prefetch failed (go build will retry): $(tail -n 1 "$PREFIX/go-prefetch.log")"
}

# ---------------------------------------------------------------- route A: own flux.pc
route_a() {
    local a sum
    prefetch_go_modules
    build_libflux || { wait_go_modules; die "cargo build of libflux failed (see above)"; }
    wait_go_modules
    a="$FLUX/libflux/target/release/libflux.a"
    [ -f "$a" ] || die "cargo finished but $a is missing"
    # The Go build cache keys a cgo package on CGO_* flags but NOT on pkg-config's output or the
    # archives it names, so a cached libflux package could keep linking a stale or deleted archive
    # (or another cache dir's). An id of the archive's content and of this prefix goes into both
    # the archive's name and CGO_CPPFLAGS: a new libflux or prefix recompiles the cgo packages.
    sum="$({ sha256sum <"$a"; printf '%s' "$PREFIX"; } | sha256sum | cut -c1-12)"
    rm -f "$PREFIX"/flux/lib/libflux*.a
    cp "$a" "$PREFIX/flux/lib/libflux-$sum.a" # only the .a: -l would prefer a .so
    rm -rf "$PREFIX/flux/include/influxdata"
    cp -r "$FLUX/libflux/include/influxdata" "$PREFIX/flux/include/"
    cat >"$PREFIX/flux/flux.pc" <<EOF
prefix=$PREFIX/flux
libdir=\${prefix}/lib
includedir=\${prefix}/include
Name: flux
Version: ${FLUX_VER#v}
Description: Flux language library (libflux), built locally for influxd
Libs: -L\${libdir} -lflux-$sum -ldl -lpthread -lm
Cflags: -I\${includedir}
EOF
    log "step 3b: go build ./cmd/influxd (route A: system pkg-config + own flux.pc)"
    rm -f "$PREFIX/bin/influxd.tmp"
    (cd "$SRC" && PKG_CONFIG="$(command -v pkg-config)" PKG_CONFIG_PATH="$PREFIX/flux" \
        CGO_CPPFLAGS="${CGO_CPPFLAGS:-} -DHEMS_LIBFLUX_ID=$sum" \
        go build -trimpath -tags sqlite_foreign_keys,sqlite_json \
        -ldflags "-s -w -X main.version=${INFLUX_VER#v} -X main.commit=goproxy" \
        -o "$PREFIX/bin/influxd.tmp" ./cmd/influxd)
}

# ---------------------------------------------------------------- route B: InfluxData's wrapper
route_b() {
    local gc libs id
    log "step 3: route B (InfluxData pkg-config wrapper builds libflux itself)"
    (cd "$SRC" && go build -o "$PREFIX/tools/pkg-config" github.com/influxdata/pkg-config)
    # The wrapper reuses an existing copy here instead of copying the module cache: hand it ours.
    gc="$(go env GOCACHE)/pkgconfig/github.com/influxdata/flux@$FLUX_VER"
    if [ ! -f "$gc/.copied" ]; then
        mkdir -p "$(dirname "$gc")"
        rm -rf "$gc"
        cp -r "$FLUX" "$gc"
        rm -rf "$gc/libflux/target" # route A's cargo output, useless at the new path
    fi
    rm -f "$PREFIX/bin/influxd.tmp"
    # Go would reuse a cached libflux package without calling the wrapper (see route_a), linking
    # route A's archive or one since deleted from the wrapper's lib dir. Key the cgo packages on
    # this prefix and on the archives present there, so a missing archive means a rebuild.
    libs="$(find "$(go env GOCACHE)/pkgconfig/$(go env GOOS)_$(go env GOARCH)/lib" -name "*.a" 2>/dev/null | sort | tr '\n' ' ')"
    id="$(printf '%s|%s' "$PREFIX" "$libs" | sha256sum | cut -c1-12)"
    (cd "$SRC" && PKG_CONFIG="$PREFIX/tools/pkg-config" RUSTFLAGS="--cap-lints=warn ${RUSTFLAGS:-}" \
        CGO_CPPFLAGS="${CGO_CPPFLAGS:-} -DHEMS_LIBFLUX_ROUTE_B=$id" \
        go build -trimpath -tags sqlite_foreign_keys,sqlite_json \
        -ldflags "-s -w -X main.version=${INFLUX_VER#v} -X main.commit=goproxy" \
        -o "$PREFIX/bin/influxd.tmp" ./cmd/influxd)
}

case "$ROUTE" in
A) route_a || die "route A failed" ;;
B) route_b || die "route B failed" ;;
auto)
    if ! route_a; then
        log "route A failed; trying route B (InfluxData pkg-config wrapper)"
        route_b || die "both build routes failed for influxd $INFLUX_VER (see above)"
    fi
    ;;
*) die "INFLUXD_BUILD_ROUTE must be auto, A or B (got $ROUTE)" ;;
esac

is_influxd2 "$PREFIX/bin/influxd.tmp" || die "built binary does not report version 2.x"
mv -f "$PREFIX/bin/influxd.tmp" "$PREFIX/bin/influxd"
log "built: $("$PREFIX/bin/influxd" version)"
found "$PREFIX/bin/influxd"
