#!/usr/bin/env bash
# Regenerates the shipped lung weights (lungjax/models/weights/lungs_unet.npz + its model card) and results/lungs/.
# Run from the repository root with the shared data at ../shared/data. W: the training run's folder.
# How the settings were chosen: docs/lungs.md. (The committed copy was cut at an epoch limit: see README.md here.)
set -euo pipefail
W=${W:-/tmp/lungjax_lungs_run}
nice -n 10 python -m lungjax.main --config=configs/lungs.py --mode=train --workdir="$W" --config.train.num_epochs=60
python -m lungjax.segmentation export --workdir="$W" --out=lungjax/models/weights/lungs_unet.npz --dtype=float16
python -m lungjax.tools.lungs_report --workdir="$W" --out=results/lungs --data=../shared/data --card
