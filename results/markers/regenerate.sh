#!/bin/bash
# Regenerates results/markers/ from the repository root (the shared data at ../shared/data); about 20 minutes on 2 quiet cores.
set -euo pipefail
D=../shared/data
# The outputs below are this script's: the earlier ones go first (lungjax writes over no file it has no record of).
rm -f results/markers/markers.json results/markers/markers.md results/markers/planted.json \
  results/markers/planted_sheet.png results/markers/lungs_overlap.json results/markers/lungs_overlap_sheet.png \
  results/markers/lungs_overlap_predicted.json results/markers/planted_lungs_dev.json \
  results/markers/planted_lungs.json results/markers/detections_*.png results/markers/.lungjax-outputs.json
# The marker table of the three shared sources (markers.json: per image; markers.md: per source / class).
rm -rf /tmp/lungjax-markers-audit
python -m lungjax.tools.audit "$D/covid19-image-dataset/train" "$D/covid19-radiography-sample" \
  "$D/cohen-covid-chestxray/images" --out=/tmp/lungjax-markers-audit --markers
cp /tmp/lungjax-markers-audit/markers.json /tmp/lungjax-markers-audit/markers.md results/markers/
# Planted markers on the test half of every source (the detector's thresholds were set on the dev half).
python -m benchmarks.markers_planted --data=$D --split=test --per_source=100 --seed=1 \
  --out=results/markers/planted.json --sheet=results/markers/planted_sheet.png
# Marker pixels inside cohen's human lung masks (all 302 masked films; target 0), with crops of every box that
# touches a lung mask.
python -m benchmarks.markers_lungs --data=$D --out=results/markers/lungs_overlap.json \
  --sheet=results/markers/lungs_overlap_sheet.png
# The same with the shipped lung U-Net's mask handed to the detector (as audit --markers and mask_markers run it),
# for every candidate lung guard of the rule in README.md ("Lung guard"); split by the planted halves and by the
# U-Net's own split (unet_test: its 60 held-out films).
python -m benchmarks.markers_lungs --data=$D --predicted_lungs --lung_guards=0,0.01,0.02,0.03,0.05 \
  --out=results/markers/lungs_overlap_predicted.json
# Planted markers with the U-Net's lungs handed to the detector (guard 0, the rule's best recall; plants off the
# lungs on every source) beside the film alone on the same plants: dev half (the rule's check), then the test half.
python -m benchmarks.markers_planted --data=$D --split=dev --per_source=100 --seed=1 --predicted_lungs \
  --lung_guard=0 --out=results/markers/planted_lungs_dev.json
python -m benchmarks.markers_planted --data=$D --split=test --per_source=100 --seed=1 --predicted_lungs \
  --lung_guard=0 --out=results/markers/planted_lungs.json
# Contact sheets of detections on 24 real, unplanted films of each source (detections_<source>.png).
python results/markers/sheet.py $D results/markers
