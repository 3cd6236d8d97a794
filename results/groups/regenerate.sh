#!/usr/bin/env bash
# Regenerates results/groups/ (issue 30): the multisource recipe (configs/multisource.py) trained on the three shared
# sources (Kaggle train, the COVID-19 Radiography Database sample, Cohen's collection), its validation split grouped
# by copies only ("ungrouped") and by copies and Cohen's patientid ("grouped"), seeds 0-2 each, then
# check_patients.py counts from each run's own records (eval/val/predictions.csv, training_thumbnails.npz,
# summary.json) the Cohen patients on both sides of its split, and tabulates the validation figures of both arms.
# A run takes ~30 min on 2 shared CPU cores; runs already finished (summary.json) are kept.
# Usage (from the repository root): bash results/groups/regenerate.sh [DATA_DIR] [SEEDS...]
set -euo pipefail
cd "$(dirname "$0")/../.."
data=$(realpath "${1:-../shared/data}")
shift || true
seeds=("${@:-0 1 2}")
seeds=(${seeds[*]})
root=workdirs/results-groups
out=results/groups
cohen="cohen=$data/cohen-covid-chestxray/images;COVID-19=Covid,No Finding=Normal"
radiography="radiography=$data/covid19-radiography-sample;COVID=Covid,Normal=Normal"
table="$data/cohen-covid-chestxray/metadata.csv"
mkdir -p "$root"
for seed in "${seeds[@]}"; do
  for arm in grouped ungrouped; do
    if [ "$arm" = grouped ]; then source3="$cohen;metadata=$table;group_by=patientid"; else source3="$cohen"; fi
    [ -f "$root/$arm/seed_$seed/summary.json" ] || nice -n 10 python -m lungjax.main --config=configs/multisource.py \
      --config.data.root="$data/covid19-image-dataset" \
      --config.data.extra_sources="('$radiography','$source3')" \
      --config.seed="$seed" --workdir="$root/$arm/seed_$seed"
  done
done
python results/groups/check_patients.py "$root" "$table" "$out"
