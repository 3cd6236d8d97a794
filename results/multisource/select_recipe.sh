#!/usr/bin/env bash
# Longer training and augmentation for configs/multisource.py, chosen on validation only (seed 0), against the
# 10-epoch run of select.sh (balanced_validation_metrics.json): the mixed run with --config.train.num_epochs=20, and
# with 20 epochs plus --config.augment.enabled=True. Writes results/multisource/selection/recipe/ and recipe.md.
# About 55 min on 2 quiet CPU cores. Usage (from the repository root):
#   bash results/multisource/select_recipe.sh [KAGGLE_DIR] [SAMPLE_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
kaggle=${1:-../shared/data/covid19-image-dataset}
sample=${2:-../shared/data/covid19-radiography-sample}
root=workdirs/results-multisource/selection
mkdir -p results/multisource/selection/recipe
for variant in 20_epochs augment_20_epochs; do
  augment=False
  [ "$variant" = augment_20_epochs ] && augment=True
  [ -f "$root/$variant/summary.json" ] || python -m lungjax.main --config=configs/multisource.py \
    --config.data.root="$kaggle" --config.data.extra_root="$sample" \
    --config.data.extra_class_names='COVID=Covid,Normal=Normal' --config.seed=0 \
    --config.train.num_epochs=20 --config.augment.enabled=$augment --workdir="$root/$variant"
  cp "$root/$variant/eval/val/metrics.json" "results/multisource/selection/recipe/${variant}_validation_metrics.json"
done
python results/multisource/selection.py recipe results/multisource/selection
