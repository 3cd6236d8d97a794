#!/usr/bin/env bash
# Regenerates results/cnn/: configs/cnn.py (the study's recipe) trained with 5 seeds (init, shuffling, dropout) on
# the shared train folder, each validated on the same grouped, stratified 20% split; the headline is the seeds'
# mean ± std and their pooled predictions with 95% intervals. Copies the summary and every seed's reports here.
# Usage (from the repository root): bash results/cnn/regenerate.sh [DATA_ROOT]
set -euo pipefail
cd "$(dirname "$0")/../.."
data_root=${1:-../shared/data/covid19-image-dataset}
workdir=workdirs/results-cnn
rm -rf "$workdir"
mkdir -p workdirs
command=(python -m lungjax.main --config=configs/cnn.py --workdir="$workdir" --config.data.root="$data_root"
         --config.seeds=5)
# /usr/bin/time (GNU time, where installed) records the run's peak RSS in KB.
timer=()
if [[ -x /usr/bin/time ]]; then timer=(/usr/bin/time -f %M -o workdirs/results-cnn.maxrss); fi
rm -f workdirs/results-cnn.maxrss
start=$(date +%s.%N)
"${timer[@]}" "${command[@]}" 2>&1 | tee workdirs/results-cnn.log
end=$(date +%s.%N)
out=results/cnn
rm -rf "$out"/seed_* "$out/pooled" "$out"/*.png "$out"/summary.json
cp "$workdir/seeds/metrics.json" "$workdir/seeds/report.md" "$out/"
cp -r "$workdir/seeds/pooled" "$out/pooled"
for run in "$workdir"/seed_*; do
  name=$(basename "$run")
  mkdir -p "$out/$name"
  cp "$run/summary.json" "$run/curves.png" "$run/calibration.json" "$out/$name/"
  cp "$run/eval/val/"{metrics.json,report.md,confusion_matrix.png,roc.png,reliability.png} "$out/$name/"
done
python - "$start" "$end" "${command[*]}" > "$out/run.json" <<'PY'
import json, os, platform, sys
import jax
start, end, command = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
maxrss = 'workdirs/results-cnn.maxrss'
peak = round(int(open(maxrss).read().split()[-1]) / 2**20, 3) if os.path.exists(maxrss) else 'not measured'
print(json.dumps({'command': 'bash results/cnn/regenerate.sh', 'runs': command,
                  'wall_seconds': round(end - start, 1), 'peak_rss_gb': peak, 'cpu_count': os.cpu_count(),
                  'machine': platform.processor() or platform.machine(), 'jax': jax.__version__,
                  'devices': [str(d) for d in jax.devices()]}, indent=2))
PY
cat "$out/report.md"
