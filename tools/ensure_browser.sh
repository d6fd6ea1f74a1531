#!/usr/bin/env bash
# Make sure Debian's Chromium and its ChromeDriver are installed: the browser tests
# (tests/browser) drive them through Selenium, which is told where they are and never
# downloads a browser. A quick no-op when both are there; otherwise apt-get installs them
# (as root, or through sudo when it asks for no password).
#   tools/ensure_browser.sh          install if missing
# INGEST_CHROMIUM / INGEST_CHROMEDRIVER name other binaries (the tests read them too).
set -euo pipefail

chromium="${INGEST_CHROMIUM:-/usr/bin/chromium}"
chromedriver="${INGEST_CHROMEDRIVER:-/usr/bin/chromedriver}"

if [[ -x "$chromium" && -x "$chromedriver" ]]; then
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "ensure_browser: $chromium or $chromedriver is missing and installing needs root:" >&2
    echo "  sudo apt-get install -y chromium chromium-driver" >&2
    echo "  (the browser tests are skipped without them)" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_browser: no apt-get here: install Chromium and ChromeDriver yourself and set" >&2
    echo "  INGEST_CHROMIUM and INGEST_CHROMEDRIVER (the browser tests are skipped without them)" >&2
    exit 0
fi

echo "ensure_browser: installing chromium and chromium-driver (apt-get) for tests/browser"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver
echo "ensure_browser: $("$chromium" --version 2>/dev/null || echo "chromium ?"),"\
" $("$chromedriver" --version 2>/dev/null | cut -d' ' -f1-2 || echo "chromedriver ?")"
