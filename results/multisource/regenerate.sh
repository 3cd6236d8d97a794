#!/usr/bin/env bash
# Regenerates results/multisource/ (issue 16): the study CNN trained on the Kaggle train alone and on the Kaggle
# train + the COVID-19 Radiography Database sample (configs/multisource.py), 3 seeds each, both evaluated on the
# same validation images that neither trained on (per source), the shortcut check of seed 0 of both, and paired
# comparisons of seed 0. About 50 min on 2 quiet CPU cores (a mixed run: ~11 min).
# Usage (from the repository root): bash results/multisource/regenerate.sh [KAGGLE_DIR] [SAMPLE_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
kaggle=${1:-../shared/data/covid19-image-dataset}
sample=${2:-../shared/data/covid19-radiography-sample}
root=workdirs/results-multisource
out=results/multisource
mkdir -p "$root"
for seed in 0 1 2; do
  [ -f "$root/kaggle/seed_$seed/summary.json" ] || python -m lungjax.main --config=configs/multisource.py \
    --config.data.root="$kaggle" --config.seed=$seed --workdir="$root/kaggle/seed_$seed"
  [ -f "$root/mixed/seed_$seed/summary.json" ] || python -m lungjax.main --config=configs/multisource.py \
    --config.data.root="$kaggle" --config.data.extra_root="$sample" \
    --config.data.extra_class_names='COVID=Covid,Normal=Normal' --config.seed=$seed --workdir="$root/mixed/seed_$seed"
done
# The images neither arm trained on: the Kaggle-alone run's validation split (the mixed run holds it out too) and
# the sample's part of the mixed run's validation split (symbolic links, under the class names).
rm -rf "$root/held_out"
python results/multisource/held_out_folders.py "$root/mixed/seed_0" "$root/kaggle/seed_0" "$root/held_out"
for arm in kaggle mixed; do
  for seed in 0 1 2; do
    rm -rf "$root/$arm/seed_$seed/eval/folder-kaggle-val+sample-val"
    python -m lungjax.main --config=configs/multisource.py --workdir="$root/$arm/seed_$seed" --mode=eval \
      --config.eval.dir="$root/held_out/kaggle-val,$root/held_out/sample-val"
  done
  rm -rf "$root/$arm/seed_0/shortcuts"
  for folder in kaggle-val sample-val; do
    python -m lungjax.main --config=configs/multisource.py --workdir="$root/$arm/seed_0" --mode=shortcuts \
      --config.eval.dir="$root/held_out/$folder"
  done
done
for folder in kaggle-val sample-val; do
  python -m lungjax.tools.compare "$root/kaggle/seed_0" "$root/mixed/seed_0" --dir="$root/held_out/$folder" \
    --out="$out/compare-$folder"
done
python results/multisource/summarize.py "$root" "$out"
for arm in kaggle mixed; do
  for folder in kaggle-val sample-val; do
    mkdir -p "$out/$arm-shortcuts/$folder"
    cp "$root/$arm/seed_0/shortcuts/$folder"/shortcuts.{json,md,png} "$out/$arm-shortcuts/$folder/"
  done
  for seed in 0 1 2; do
    mkdir -p "$out/$arm/seed_$seed"
    cp "$root/$arm/seed_$seed/eval/folder-kaggle-val+sample-val"/{metrics.json,report.md} "$out/$arm/seed_$seed/"
    cp "$root/$arm/seed_$seed/eval/val/metrics.json" "$out/$arm/seed_$seed/own_validation_metrics.json"
  done
done
