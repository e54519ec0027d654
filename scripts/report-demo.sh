#!/usr/bin/env bash
# make report-demo: a ramp against the local vcsim (scripts/report_demo.py), then the
# HTML report opened in headless Chromium to check what a reader sees: the knee
# sentence, the error table and the run's metadata. A screenshot is left beside it.
# Chromium comes from Debian's package (no browser download): installed here when
# we are root and it is missing, as scripts/ensure-system-deps.sh does for its own.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${REPORT_DEMO_OUT:-demo-out/report}

browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "report-demo: installing Debian's chromium" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium >/dev/null
        browser=$(command -v chromium)
    else
        echo "report-demo: needs a headless browser: apt-get install chromium (as root)" >&2
        exit 1
    fi
fi

"$PYTHON" scripts/report_demo.py --out "$OUT" "$@"

page="$(pwd)/$OUT/report.html"
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run
       --user-data-dir="$(mktemp -d)")
"$browser" "${flags[@]}" --dump-dom "file://$page" 2>/dev/null >"$OUT/report.dom.html"
"$browser" "${flags[@]}" --window-size=1280,2200 --screenshot="$OUT/report-page.png" \
    "file://$page" 2>/dev/null >/dev/null

failed=0
check() {  # check WHAT PATTERN: the rendered page shows PATTERN
    if grep -Eq -- "$2" "$OUT/report.dom.html"; then
        echo "report-demo: page shows $1"
    else
        echo "report-demo: page does NOT show $1 ($2)" >&2
        failed=1
    fi
}
check "the knee sentence" '<span id="knee">(knee at [0-9]+ workers?|no knee): '
check "the error table" '<table id="errors">(<tbody>)?<tr><th>kind</th><th>count</th><th>sample messages'
check "the tool version" '<td>tool</td><td>asyncovf [0-9]'
check "the command line" '<td>command</td><td>asyncovf run '
check "the packages and sizes" '<td>packages</td><td>[^<]+ \([0-9.]+ [KMG]iB\)'
check "the settings" '<td>settings</td><td>ramp 1 → '
check "the start time" '<td>started at</td><td>[0-9]{4}-'
check "the vCenter row" '<td>vCenter</td><td>VMware vCenter Server'
if grep -Eq '(src|href)="https?://' "$OUT/report.dom.html"; then
    echo "report-demo: the page loads something from the network" >&2
    failed=1
fi
echo "report-demo: $OUT/report.html, screenshot $OUT/report-page.png"
exit $failed
