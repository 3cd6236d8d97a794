#!/usr/bin/env bash
# Regenerates results/subgroups/ (issue 25): the multisource recipe trained WITHOUT Cohen's collection (Kaggle train
# + the COVID-19 Radiography Database sample, seed 0), then --mode=eval on all of Cohen's films with its metadata as
# subgroups (sex, view, age binned). Cohen's films were never trained on (some are copies of Kaggle Covid films: the
# report lists them under "copies of training images"). Copies metrics.json and report.md here (no images).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=$(realpath "${1:-../shared/data}")
run=workdirs/results-subgroups/no_cohen/seed_0
[ -f "$run/summary.json" ] || nice -n 10 python -m lungjax.main --config=configs/multisource.py \
  --config.data.root="$data/covid19-image-dataset" \
  --config.data.extra_sources="('radiography=$data/covid19-radiography-sample;COVID=Covid,Normal=Normal',)" \
  --config.seed=0 --workdir="$run"
# Issue 25's done-when command as written (no --config: the model and settings come from $run/config.json; age named
# without bins is cut at its quartiles), plus the folder-to-class map Cohen's folder names need.
nice -n 10 python -m lungjax.cli eval --workdir="$run" \
  --config.eval.dir="$data/cohen-covid-chestxray/images" --config.eval.class_names='COVID-19=Covid,No Finding=Normal' \
  --config.eval.metadata="$data/cohen-covid-chestxray/metadata.csv" --config.eval.subgroups=sex,view,age
out="$run/eval/folder-images"
cp "$out/metrics.json" "$out/report.md" results/subgroups/
# The audit's class counts per subgroup of the same films (the data itself, before any model): audit.json and its
# printed summary (pairs.png shows dataset films: not copied).
rm -rf workdirs/results-subgroups/audit
mkdir -p results/subgroups/audit
nice -n 10 python -m lungjax.cli audit "$data/cohen-covid-chestxray/images" --out=workdirs/results-subgroups/audit \
  --metadata="$data/cohen-covid-chestxray/metadata.csv" --subgroups=sex,view,age \
  | sed "s|$PWD/||g" > results/subgroups/audit/summary.txt
cp workdirs/results-subgroups/audit/audit.json results/subgroups/audit/
chromium --headless --disable-gpu --no-sandbox --hide-scrollbars --window-size=1200,2400 \
  --screenshot="$PWD/results/report_html/top.png" "file://$(realpath "$out")/report.html"
chromium --headless --disable-gpu --no-sandbox --hide-scrollbars --window-size=1200,2400 \
  --screenshot="$PWD/results/subgroups/subgroups.png" "file://$(realpath "$out")/report.html#per-subgroup"
# The anchor screenshot leaves the viewport above the section blank: keep the rows from the first drawn one.
python - <<'PY'
import numpy as np
from PIL import Image
path = 'results/subgroups/subgroups.png'
image = Image.open(path).convert('RGB')
drawn = np.flatnonzero((np.asarray(image.convert('L')) < 250).any(axis=1))
image.crop((0, max(int(drawn[0]) - 10, 0), image.width, image.height)).save(path)
PY
