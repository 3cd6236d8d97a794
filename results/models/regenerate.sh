#!/usr/bin/env bash
# Regenerates results/models/: the study's model set trained on the shared train folder with the same grouped 20%
# validation split (split_seed 0), 10 epochs each, then an ensemble of all of them, and a comparison table.
# The CNN is results/cnn's run (bash results/cnn/regenerate.sh first); the VGG runs reduced (VGG-11, width 32, 128 px)
# so that it trains on a 2-core CPU in minutes; the others use their configs as they are.
# Usage (from the repository root): bash results/models/regenerate.sh [DATA_ROOT]
set -euo pipefail
cd "$(dirname "$0")/../.."
data_root=${1:-../shared/data/covid19-image-dataset}
runs=workdirs/results-models
mkdir -p "$runs"
declare -A extra=(
  [autoencoder]=""
  [resnet]=""
  [vgg]="--config.model.depth=11 --config.model.width=32 --config.data.image_size=128"
)
for name in autoencoder resnet vgg; do
  rm -rf "${runs:?}/$name"
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  python -m lungjax.main --config="configs/$name.py" --workdir="$runs/$name" --config.data.root="$data_root" \
    ${extra[$name]} 2>&1 | tee "$runs/$name.log" | grep -E "^(trained|  val)" || true
  end=$(date +%s.%N)
  echo "{\"wall_seconds\": $(python -c "print(round($end - $start, 1))"), \"command\": \"python -m lungjax.main --config=configs/$name.py --workdir=$runs/$name --config.data.root=$data_root ${extra[$name]}\"}" > "$runs/$name/run.json"
done
bash results/models/table.sh "$data_root"
