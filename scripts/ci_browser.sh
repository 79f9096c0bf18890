#!/usr/bin/env bash
# CI step before the browser test (tests/access/test_browser.py, marker `browser`): make Debian's
# chromium and Python Playwright available, or fail loudly. Playwright's own browser download
# (`playwright install`) is never used: the test launches /usr/bin/chromium.
#
# Exit 0 when both are usable; non-zero (with the reason on stderr) when they cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "ci_browser: $*" >&2; exit 1; }

if [ ! -x /usr/bin/chromium ]; then
    command -v apt-get >/dev/null 2>&1 || fail "no /usr/bin/chromium and no apt-get to install it"
    [ "$(id -u)" = 0 ] || fail "no /usr/bin/chromium; installing it needs root (apt-get install chromium)"
    apt-get update -qq || fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || fail "apt-get install chromium failed"
fi
[ -x /usr/bin/chromium ] || fail "chromium installed but /usr/bin/chromium is missing"
# Japanese pages render as empty boxes in the screenshots without a CJK font (the text is still right).
if ! fc-list 2>/dev/null | grep -qi "noto sans cjk"; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-cjk >/dev/null \
            || echo "ci_browser: fonts-noto-cjk not installed; Japanese screenshots show boxes" >&2
    fi
fi

if ! python -c "import playwright.async_api" >/dev/null 2>&1; then
    python -m pip install -q playwright || fail "pip install playwright failed"
fi
python -c "import playwright.async_api" || fail "playwright does not import after installing it"

/usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync --dump-dom about:blank \
    >/dev/null 2>&1 || fail "chromium does not start headless"
echo "ci_browser: chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}') and playwright ready"
