#!/usr/bin/env bash
# The second half of results/models/regenerate.sh: the ensemble of the CNN (workdirs/results-cnn, made by
# results/cnn/regenerate.sh) with the three runs under workdirs/results-models, then the comparison table.
# Usage (from the repository root): bash results/models/table.sh [DATA_ROOT]
set -euo pipefail
cd "$(dirname "$0")/../.."
data_root=${1:-../shared/data/covid19-image-dataset}
runs=workdirs/results-models
if [ ! -f workdirs/results-cnn/summary.json ]; then
  echo "workdirs/results-cnn is missing: run bash results/cnn/regenerate.sh first" >&2
  exit 1
fi
members="$runs/autoencoder,$runs/resnet,$runs/vgg"
python -m lungjax.main --config=configs/cnn.py --workdir=workdirs/results-cnn --mode=eval \
  --config.data.root="$data_root" --config.eval.dir=@validation --config.eval.ensemble="$members" 2>&1 \
  | tail -3
python - "$runs" <<'PY'
import json, os, shutil, sys
runs = sys.argv[1]
out = 'results/models'
rows = []
def row(name, metrics, wall, command):
  m = metrics['macro_avg']
  rows.append(f"| {name} | {metrics['accuracy']:.3f} [{metrics['intervals']['accuracy']['wilson'][0]:.2f}, "
              f"{metrics['intervals']['accuracy']['wilson'][1]:.2f}] | {m['recall']:.3f} | {m['f1']:.3f} | "
              f"{m['precision']:.3f} | {metrics.get('roc_auc', {}).get('macro') or float('nan'):.3f} | {wall} | `{command}` |")
cnn_run = json.load(open('results/cnn/run.json'))
row('cnn (the study)', json.load(open('workdirs/results-cnn/eval/val/metrics.json')), cnn_run['wall_seconds'],
    cnn_run['runs'])
for name in ('autoencoder', 'resnet', 'vgg'):
  run = json.load(open(os.path.join(runs, name, 'run.json')))
  metrics = json.load(open(os.path.join(runs, name, 'eval', 'val', 'metrics.json')))
  row(name, metrics, run['wall_seconds'], run['command'])
  os.makedirs(os.path.join(out, name), exist_ok=True)
  for f in ('metrics.json', 'report.md'):
    shutil.copy(os.path.join(runs, name, 'eval', 'val', f), os.path.join(out, name, f))
  for f in ('curves.png', 'summary.json', 'run.json', 'reconstructions.png'):
    if os.path.exists(os.path.join(runs, name, f)):
      shutil.copy(os.path.join(runs, name, f), os.path.join(out, name, f))
ensemble_dir = 'workdirs/results-cnn/eval/validation_ensemble'
ensemble = json.load(open(os.path.join(ensemble_dir, 'metrics.json')))
row('ensemble of the four (mean probabilities)', ensemble, '-', 'see regenerate.sh')
os.makedirs(os.path.join(out, 'ensemble'), exist_ok=True)
for f in ('metrics.json', 'report.md'):
  shutil.copy(os.path.join(ensemble_dir, f), os.path.join(out, 'ensemble', f))
table = ['| model | accuracy [95% Wilson] | macro recall | macro F1 | macro precision | macro ROC AUC | wall s | command |',
         '|---|---|---|---|---|---|---|---|'] + rows
n = ensemble['n_images']
open(os.path.join(out, 'README.md'), 'w').write(
    '# The study\'s model set on the shared train folder\n\n'
    f'Validation metrics of each run\'s best checkpoint (by validation macro recall) on the same {n}-image grouped '
    'validation split (split seed 0). Regenerate with `bash results/models/regenerate.sh` (after '
    '`bash results/cnn/regenerate.sh`). 2-core CPU; wall time includes decoding and the final reports.\n\n'
    + '\n'.join(table) + '\n\n'
    'Read with care: the best checkpoint is chosen on this same validation split, so these figures are optimistic, '
    f'and on {n} images one image is {100 / n:.1f} points of accuracy. results/cv holds the cross-validated figure '
    'for the CNN.\n')
print('\n'.join(table))
PY
