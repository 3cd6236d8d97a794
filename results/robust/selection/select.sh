#!/usr/bin/env bash
# The candidates' leave-one-source-out runs of RULE.md (amendment 1), then their summary (candidates.md).
# Usage (from the repository root): bash results/robust/selection/select.sh STAGE [ROOT] [DATA]
#   STAGE 1: every candidate at seed 0 (about 15-25 min each on 2 quiet CPU cores);
#   STAGE 2 NAME...: those candidates at seeds 0-2 (seed 0's runs are reused: each finished run resumes at its end).
# This session's runs used ROOT=/work/runs/robust (candidate 2's seed 0 there is the folder pilot_gap, linked as gap).
set -euo pipefail
cd "$(dirname "$0")/../../.."
stage=$1; shift
root=${ROOT:-workdirs/robust-selection}
data=${DATA:-../shared/data}
PRE="--config.data.preprocess.working_size=512 --config.data.preprocess.crop_borders=True --config.data.preprocess.intensity=clahe"
AUG="--config.augment.enabled=True"
for a in crop gamma resolution blur noise pad jpeg; do AUG="$AUG --config.augment.${a}_prob=0.5"; done
declare -A FLAGS=(
  [study]=""
  [gap]="--config.model.head=gap"
  [gap_pre]="--config.model.head=gap $PRE"
  [gap_pre_aug]="--config.model.head=gap $PRE $AUG"
  [gap_pre_aug_lungs]="--config.model.head=gap $PRE $AUG --config.data.preprocess.lungs=crop"
  [resnet18_gap]="--config.data.image_size=224 $PRE $AUG"
)
run() {  # NAME SEEDS
  if [ -z "${FLAGS[$1]+known}" ]; then
    echo "select.sh: no candidate named '$1' (candidates: ${!FLAGS[*]})" >&2; exit 2
  fi
  local config=configs/cnn.py
  [ "$1" = resnet18_gap ] && config=configs/resnet.py
  # shellcheck disable=SC2086
  python -m lungjax.main --config=$config --mode=train --workdir="$root/$1" \
    --config.data.root="$data/covid19-image-dataset" \
    --config.data.extra_sources="('radiography=$data/covid19-radiography-sample;COVID=Covid,Normal=Normal','cohen=$data/cohen-covid-chestxray/images;COVID-19=Covid,No Finding=Normal')" \
    --config.cv.by_source=True --config.seeds="$2" ${FLAGS[$1]}
}
if [ "$stage" = 1 ]; then
  for name in study gap_pre_aug_lungs resnet18_gap gap_pre_aug gap_pre gap; do run "$name" 1; done
else
  for name in "$@"; do run "$name" 3; done
fi
out=results/robust/selection
rm -f "$out"/candidates.md "$out"/candidates.json "$out"/*/report.md "$out"/*/metrics.json
python results/robust/selection/summarize.py "$root"
rm -f "$out"/.lungjax-outputs.json
