#!/usr/bin/env bash
# Regenerates results/models/: the study's model set (CNN, autoencoder variant, ResNet-18, VGG-11) trained from
# scratch on the shared train folder with the same grouped 20% validation split (split seed 0), 10 epochs each, and an
# ensemble of the four. All at 128x128 px (VGG-11 also at width 32) so the set trains on a 2-core CPU in about
# 20 minutes; results/cnn has the study's CNN at its own 256 px.
# Usage (from the repository root): bash results/models/regenerate.sh [DATA_ROOT]
set -euo pipefail
cd "$(dirname "$0")/../.."
data_root=${1:-../shared/data/covid19-image-dataset}
runs=workdirs/results-models
common="--config.data.root=$data_root --config.data.image_size=128"
declare -A extra=([cnn]="" [autoencoder]="" [resnet]="" [vgg]="--config.model.depth=11 --config.model.width=32")
mkdir -p "$runs"
for name in cnn autoencoder resnet vgg; do
  rm -rf "${runs:?}/$name"
  command="python -m lungjax.main --config=configs/$name.py --workdir=$runs/$name $common ${extra[$name]}"
  start=$(date +%s.%N)
  $command > "$runs/$name.log" 2>&1
  end=$(date +%s.%N)
  python -c "import json,sys; print(json.dumps({'wall_seconds': round($end - $start, 1), 'command': sys.argv[1]}))" \
    "$command" > "$runs/$name/run.json"
  grep -E "^  val" "$runs/$name.log" || true
done
# The ensemble: mean probabilities of the four best checkpoints on the same validation split.
python -m lungjax.main --config=configs/cnn.py --workdir="$runs/cnn" --mode=eval $common \
  --config.eval.dir=@validation --config.eval.ensemble="$runs/autoencoder,$runs/resnet,$runs/vgg" \
  > "$runs/ensemble.log" 2>&1
python results/models/table.py "$runs"
