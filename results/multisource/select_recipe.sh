#!/usr/bin/env bash
# Longer training, augmentation and a decaying learning rate for configs/multisource.py, chosen on validation only
# (seed 0), against the 10-epoch run of select.sh (balanced_validation_metrics.json): the mixed run with
# --config.train.num_epochs=20, with 20 epochs plus --config.augment.enabled=True, and 10 epochs with
# --config.train.lr_schedule=cosine. Writes results/multisource/selection/recipe/ and recipe.md.
# About 65 min on 2 quiet CPU cores. Usage (from the repository root):
#   bash results/multisource/select_recipe.sh [KAGGLE_DIR] [SAMPLE_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
kaggle=${1:-../shared/data/covid19-image-dataset}
sample=${2:-../shared/data/covid19-radiography-sample}
root=workdirs/results-multisource/selection
mkdir -p results/multisource/selection/recipe
for variant in 20_epochs augment_20_epochs cosine; do
  case $variant in
    20_epochs) flags="--config.train.num_epochs=20 --config.train.lr_schedule=constant --config.augment.enabled=False" ;;
    augment_20_epochs) flags="--config.train.num_epochs=20 --config.augment.enabled=True --config.augment.rotation_prob=0.5
      --config.augment.zoom_prob=0.5 --config.augment.shift_prob=0.5 --config.train.lr_schedule=constant" ;;
    cosine) flags="--config.train.lr_schedule=cosine --config.augment.enabled=False" ;;
  esac
  # Pinned to what these runs used (configs/multisource.py has since moved on: selection.md).
  flags="$flags --config.train.learning_rate=1e-3 --config.train.source_weighting=balanced"
  flags="$flags --config.checkpoint.best_metric=macro_recall"
  # shellcheck disable=SC2086
  [ -f "$root/$variant/summary.json" ] || python -m lungjax.main --config=configs/multisource.py \
    --config.data.root="$kaggle" --config.data.extra_root="$sample" \
    --config.data.extra_class_names='COVID=Covid,Normal=Normal' --config.seed=0 $flags --workdir="$root/$variant"
  cp "$root/$variant/eval/val/metrics.json" "results/multisource/selection/recipe/${variant}_validation_metrics.json"
done
python results/multisource/selection.py recipe results/multisource/selection
