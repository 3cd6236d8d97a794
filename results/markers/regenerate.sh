#!/bin/bash
# Regenerates results/markers/ from the repository root (the shared data at ../shared/data).
set -euo pipefail
D=../shared/data
# The marker table of the three shared sources (markers.json: per image; markers.md: per source / class).
python -m lungjax.audit "$D/covid19-image-dataset/train" "$D/covid19-radiography-sample" \
  "$D/cohen-covid-chestxray/images" --out=/tmp/lungjax-markers-audit --markers
cp /tmp/lungjax-markers-audit/markers.json /tmp/lungjax-markers-audit/markers.md results/markers/
# Planted markers on the test half of every source (the detector's thresholds were set on the dev half).
python -m benchmarks.markers_planted --data=$D --split=test --per_source=100 --seed=1 \
  --out=results/markers/planted.json --sheet=results/markers/planted_sheet.png
# A contact sheet of detections on real, unplanted films of each source.
python results/markers/sheet.py $D results/markers/detections_sheet.png
