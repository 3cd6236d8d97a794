#!/usr/bin/env bash
# How configs/multisource.py's source weighting was chosen (validation only, seed 0): the mixed run with
# --config.train.source_weighting=balanced, =none and (added later, after select_recipe.sh) =within_source; the rule,
# fixed after the balanced run's figures and before the others' were read: the variant whose worse source has the
# higher validation macro recall wins. The learning rate, augmentation and checkpoint rule are pinned to those of the
# time (constant 1e-3, none, pooled macro recall). Writes results/multisource/selection/. About 33 min on 2 quiet cores.
# Usage (from the repository root): bash results/multisource/select.sh [KAGGLE_DIR] [SAMPLE_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
kaggle=${1:-../shared/data/covid19-image-dataset}
sample=${2:-../shared/data/covid19-radiography-sample}
root=workdirs/results-multisource/selection
for weighting in balanced none within_source; do
  [ -f "$root/$weighting/summary.json" ] || python -m lungjax.main --config=configs/multisource.py \
    --config.data.root="$kaggle" --config.data.extra_root="$sample" \
    --config.data.extra_class_names='COVID=Covid,Normal=Normal' --config.seed=0 \
    --config.train.source_weighting=$weighting --config.train.learning_rate=1e-3 --config.train.lr_schedule=constant \
    --config.augment.enabled=False \
    --config.checkpoint.best_metric=macro_recall --workdir="$root/$weighting"
  mkdir -p results/multisource/selection
  cp "$root/$weighting/eval/val/metrics.json" "results/multisource/selection/${weighting}_validation_metrics.json"
done
python results/multisource/selection.py weighting results/multisource/selection
