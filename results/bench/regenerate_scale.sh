#!/bin/bash
# Regenerates results/bench/scale.json: 20,000 synthetic full-size JPEGs (and a 2,000-image subset of them) generated
# under /tmp/lungjax-scale (never committed), prepared into array_record, read back for an epoch, a few train steps.
# About 40 minutes on 2 shared CPU cores; needs about 11 GB of disk under /tmp.
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m benchmarks.scale_check --config=configs/cnn.py \
  --work=/tmp/lungjax-scale --sizes=2000,20000 --train_steps=20 --eval_batches=10 --out=results/bench/scale.json
