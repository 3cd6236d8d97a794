#!/usr/bin/env bash
# Regenerates results/shortcuts/: the shortcut check (--mode=shortcuts) of the study CNN trained on the Kaggle train
# alone (results/cnn's seed 0: run `bash results/cnn/regenerate.sh` first), on the 1,000 adult films of the
# COVID-19 Radiography Database sample (a source it never saw) and on its own validation split.
# Usage (from the repository root): bash results/shortcuts/regenerate.sh [SAMPLE_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
sample=${1:-../shared/data/covid19-radiography-sample}
workdir=workdirs/results-cnn/seed_0
out=results/shortcuts
rm -rf "$workdir/shortcuts"
python -m lungjax.main --config=configs/cnn.py --workdir="$workdir" --mode=shortcuts --config.eval.dir="$sample" \
  --config.eval.class_names='COVID=Covid,Normal=Normal'
python -m lungjax.main --config=configs/cnn.py --workdir="$workdir" --mode=shortcuts --config.eval.dir=@validation
for name in "$workdir"/shortcuts/*/; do
  target="$out/$(basename "$name")"
  rm -rf "$target"; mkdir -p "$target"
  cp "$name"/shortcuts.{json,md,png} "$target/"
done
