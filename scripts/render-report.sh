#!/usr/bin/env bash
# Renders an HTML report to a PNG with headless Chromium (Debian package
# chromium) and fails when Chromium reports a page error.
#   bash scripts/render-report.sh study/report.html report.png [height]
set -euo pipefail
html=$(realpath "$1")
png=$2
height=${3:-8000}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
log=$(timeout 180 chromium --headless --no-sandbox --disable-gpu --disable-quic \
  --no-first-run --disable-background-networking --disable-component-update \
  --disable-sync --user-data-dir="$profile" --window-size=1280,"$height" \
  --enable-logging=stderr --v=0 --screenshot="$png" "file://$html" 2>&1) || {
  echo "$log" >&2
  exit 1
}
if echo "$log" | grep -E "Uncaught|CONSOLE.*(Error|error)|Failed to load resource" >&2; then
  exit 1
fi
[ -s "$png" ] || { echo "no screenshot written" >&2; exit 1; }
echo "rendered $html -> $png"
