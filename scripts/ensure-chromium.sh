#!/usr/bin/env bash
# Print the path of a headless-capable Chromium, installing Debian's package when we
# are root and it is missing (no browser download); for make report-demo and
# make metrics-demo, never for make test.
set -euo pipefail

browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "asyncovf: installing Debian's chromium" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium >/dev/null
        browser=$(command -v chromium)
    else
        echo "asyncovf: needs a headless browser: apt-get install chromium (as root)" >&2
        exit 1
    fi
fi
echo "$browser"
