#!/usr/bin/env bash
# Augmentation for configs/multisource.py as it stands after select.sh (within_source weighting, best epoch by the
# worse source), chosen on validation only (seed 0), against that config's own seed-0 run (as_it_stands: no
# augmentation; the same run as regenerate.sh's mixed/seed_0 before the config took the winner):
#   exposure:         --config.augment.enabled=True with only brightness and contrast (rotation, zoom, shift off)
#   exposure_shift:   the same plus configs/cnn.py's shift (up to 8% of the height and width)
# Why these: the misread adult films differ most in exposure (bright, washed-out films called Covid), and the full
# augmentation (select_recipe.sh) underfit in 20 epochs. Both 10 epochs. Rule (fixed before either run's figures were
# read): the variant whose worse source has the higher validation macro recall wins; a tie goes to the one listed
# first (the config as it stands). Writes results/multisource/selection/augment/ and augment.md.
# About 33 min on 2 quiet CPU cores. Usage (from the repository root):
#   bash results/multisource/select_augment.sh [KAGGLE_DIR] [SAMPLE_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
kaggle=${1:-../shared/data/covid19-image-dataset}
sample=${2:-../shared/data/covid19-radiography-sample}
root=workdirs/results-multisource/selection
mkdir -p results/multisource/selection/augment
for variant in as_it_stands exposure exposure_shift; do
  # Every augmentation setting pinned: configs/multisource.py has since taken the winner (augment.md).
  flags="--config.augment.enabled=True --config.augment.rotation_prob=0 --config.augment.zoom_prob=0"
  case $variant in
    as_it_stands) flags="--config.augment.enabled=False" ;;
    exposure) flags="$flags --config.augment.shift_prob=0" ;;
    exposure_shift) flags="$flags --config.augment.shift_prob=0.5" ;;
  esac
  # shellcheck disable=SC2086
  [ -f "$root/$variant/summary.json" ] || python -m lungjax.main --config=configs/multisource.py \
    --config.data.root="$kaggle" --config.data.extra_root="$sample" \
    --config.data.extra_class_names='COVID=Covid,Normal=Normal' --config.seed=0 $flags --workdir="$root/$variant"
  cp "$root/$variant/eval/val/metrics.json" "results/multisource/selection/augment/${variant}_validation_metrics.json"
done
python results/multisource/selection.py augment results/multisource/selection
