#!/usr/bin/env bash
# Regenerates results/cv/: 5-fold grouped, stratified cross-validation of configs/cnn.py on the shared train folder
# (near-copy groups kept inside one fold), with 95% intervals on the pooled out-of-fold predictions.
# Usage (from the repository root): bash results/cv/regenerate.sh [DATA_ROOT]
set -euo pipefail
cd "$(dirname "$0")/../.."
data_root=${1:-../shared/data/covid19-image-dataset}
workdir=workdirs/results-cv
rm -rf "$workdir"
mkdir -p workdirs
command=(python -m lungjax.main --config=configs/cnn.py --workdir="$workdir" --config.data.root="$data_root"
         --config.cv.folds=5)
start=$(date +%s.%N)
"${command[@]}" 2>&1 | tee workdirs/results-cv.log
end=$(date +%s.%N)
out=results/cv
rm -rf "$out/pooled" "$out"/fold_*
cp "$workdir/cv/metrics.json" "$workdir/cv/report.md" "$out/"
cp -r "$workdir/cv/pooled" "$out/pooled"
for fold in "$workdir"/fold_*; do
  name=$(basename "$fold")
  mkdir -p "$out/$name"
  cp "$fold/summary.json" "$fold/curves.png" "$fold/eval/val/metrics.json" "$fold/eval/val/report.md" "$out/$name/"
done
python - "$start" "$end" "${command[*]}" > "$out/run.json" <<'PY'
import json, os, sys
start, end, command = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
print(json.dumps({'command': 'bash results/cv/regenerate.sh', 'runs': command,
                  'wall_seconds': round(end - start, 1), 'cpu_count': os.cpu_count()}, indent=2))
PY
cat "$out/report.md"
