#!/usr/bin/env bash
# Regenerates results/models/: the study's model set (CNN, autoencoder variant, ResNet-18, VGG-11) trained from
# scratch on the shared train folder with the same grouped 20% validation split (split seed 0), 10 epochs each:
# CNN, ResNet and VGG with 3 seeds each (mean ± std), the autoencoder with one (its stage 1 takes ~20 minutes here);
# the ensemble of the four seed-0 runs; and each model's paired comparison with the study CNN (seed 0 vs seed 0, on
# the same validation images). All at 128x128 px (VGG-11 also at width 32) so the set trains on a 2-core CPU;
# results/cnn has the study's CNN at its own 256 px with 5 seeds.
# Usage (from the repository root): bash results/models/regenerate.sh [DATA_ROOT]
set -euo pipefail
cd "$(dirname "$0")/../.."
data_root=${1:-../shared/data/covid19-image-dataset}
runs=workdirs/results-models
common="--config.data.root=$data_root --config.data.image_size=128"
declare -A extra=([cnn]="--config.seeds=3" [autoencoder]="" [resnet]="--config.seeds=3"
                  [vgg]="--config.seeds=3 --config.model.depth=11 --config.model.width=32")
mkdir -p "$runs"
for name in cnn resnet vgg autoencoder; do  # The autoencoder last: the longest.
  rm -rf "${runs:?}/$name"
  command="python -m lungjax.main --config=configs/$name.py --workdir=$runs/$name $common ${extra[$name]}"
  start=$(date +%s.%N)
  $command > "$runs/$name.log" 2>&1
  end=$(date +%s.%N)
  python -c "import json,sys; print(json.dumps({'wall_seconds': round($end - $start, 1), 'command': sys.argv[1]}))" \
    "$command" > "$runs/$name/run.json"
done
seed0() { if [[ -d "$runs/$1/seed_0" ]]; then echo "$runs/$1/seed_0"; else echo "$runs/$1"; fi; }
# The ensemble: mean probabilities of the four seed-0 best checkpoints on the same validation split.
python -m lungjax.main --config=configs/cnn.py --workdir="$(seed0 cnn)" --mode=eval $common \
  --config.eval.dir=@validation \
  --config.eval.ensemble="$(seed0 autoencoder),$(seed0 resnet),$(seed0 vgg)" > "$runs/ensemble.log" 2>&1
# Each model against the study CNN on the same validation images: paired bootstrap and McNemar's exact test.
for name in autoencoder resnet vgg; do
  python -m lungjax.tools.compare "$(seed0 cnn)" "$(seed0 $name)" --dir=@validation --out="$runs/compare/$name" \
    > "$runs/compare-$name.log" 2>&1
done
python results/models/table.py "$runs"
