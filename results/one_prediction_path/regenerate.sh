#!/usr/bin/env bash
# Regenerates before.json, after.json and comparison.json (issue 27, "one prediction path"): a tiny run trained once
# on synthetic images (15 test images: the last batch of 4 padded), then every prediction path's probabilities
# recorded with the code before the change (commit 4c58985) and with this checkout's, on the same workdir.
#   bash results/one_prediction_path/regenerate.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
out="$repo/results/one_prediction_path"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/before_code"
git -C "$repo" archive 4c58985 | tar -x -C "$tmp/before_code"
(cd "$tmp/before_code" && PYTHONPATH=. JAX_PLATFORMS=cpu python "$out/record.py" "$tmp/workdir" "$tmp/data" "$tmp/before.json")
(cd "$repo" && PYTHONPATH=. JAX_PLATFORMS=cpu python "$out/record.py" "$tmp/workdir" "$tmp/data" "$tmp/after.json")
cp "$tmp/before.json" "$tmp/after.json" "$out/"
python "$out/compare.py" "$out/before.json" "$out/after.json" "$out/comparison.json"
