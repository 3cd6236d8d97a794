#!/usr/bin/env bash
# Peak RSS and wall time of a full study-config run (lungjax.main: 10 epochs, validation each epoch, reports) under
# three host memory policies: glibc's defaults (0), the default cap (2.2 GB) and no effective cap (64 GB).
# Usage (from the repository root; about 6 minutes on 2 cores): bash results/bench/full_run_rss.sh [DATA_ROOT]
# Writes results/bench/full_run_rss.json (GNU time's maximum resident set size).
set -euo pipefail
cd "$(dirname "$0")/../.."
data_root=${1:-../shared/data/covid19-image-dataset}
mkdir -p workdirs
rows=()
for cap in 0 2.2 64; do
  workdir=workdirs/full-run-rss-$cap
  rm -rf "$workdir"
  start=$(date +%s.%N)
  /usr/bin/time -f %M -o "$workdir.maxrss" python -m lungjax.main --config=configs/cnn.py --workdir="$workdir" \
    --config.data.root="$data_root" --config.train.keep_freed_host_memory_gb="$cap" > "$workdir.log" 2>&1
  end=$(date +%s.%N)
  rows+=("$cap $(tail -1 "$workdir.maxrss") $start $end $workdir")
done
python - "${rows[@]}" > results/bench/full_run_rss.json <<'PY'
import json, os, re, sys
runs = []
for row in sys.argv[1:]:
  cap, kb, start, end, workdir = row.split()
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  trims = re.search(r'freed memory handed back (\d+) times', open(f'{workdir}.log').read())
  runs.append({'host_memory_trims': int(trims.group(1)) if trims else None,
               'keep_freed_host_memory_gb': float(cap), 'peak_rss_gb': round(int(kb) / 2**20, 3),
               'wall_s': round(float(end) - float(start), 1), 'train_seconds': summary['train_seconds_this_run'],
               'val_accuracy': summary['evaluations']['val']['accuracy']})
print(json.dumps({'command': 'bash results/bench/full_run_rss.sh',
                  'runs_each': 'python -m lungjax.main --config=configs/cnn.py --workdir=W --config.data.root=DATA '
                               '--config.train.keep_freed_host_memory_gb=CAP',
                  'cpu_count': os.cpu_count(), 'runs': runs}, indent=2))
PY
cat results/bench/full_run_rss.json
