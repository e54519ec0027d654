#!/usr/bin/env bash
# make report-demo: a ramp against the local vcsim (scripts/report_demo.py), then the
# HTML report opened in headless Chromium to check what a reader sees: the knee
# sentence, the error table and the run's metadata. A screenshot is left beside it.
# Chromium comes from Debian's package (no browser download): scripts/ensure-chromium.sh.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${REPORT_DEMO_OUT:-demo-out/report}

browser=$(scripts/ensure-chromium.sh)

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
