#!/usr/bin/env bash
# Retake the screenshots in docs/images/ from the built site (make docs first): the API entry of
# losskit.functional.cross_entropy and the loss table, in headless Chromium (Debian's `chromium`).
# Not part of CI. Usage: bash docsgen/screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
shot() {  # shot OUT.png PAGE WIDTHxHEIGHT
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --window-size="$3" \
    --virtual-time-budget=5000 --screenshot="$1" "file://$PWD/site/$2" 2>/dev/null
}
shot docs/images/api-cross-entropy.png "api/functional/cross_entropy.html" 1280,1700
shot docs/images/loss-table.png "loss-table.html" 1600,1400
