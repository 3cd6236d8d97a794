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
python - "$runs" <<'PY'
import json, os, shutil, sys
runs, out = sys.argv[1], 'results/models'
rows = []
def row(name, metrics, wall, command):
  m, low, high = metrics['macro_avg'], *metrics['intervals']['accuracy']['wilson']
  auc = metrics.get('roc_auc', {}).get('macro')
  rows.append(f"| {name} | {metrics['accuracy']:.3f} [{low:.2f}, {high:.2f}] | {m['recall']:.3f} | {m['f1']:.3f} | "
              f"{m['precision']:.3f} | {auc if auc is None else round(auc, 3)} | {wall} | `{command}` |")
def copy(src_dir, dst_dir, names):
  os.makedirs(dst_dir, exist_ok=True)
  for f in names:
    if os.path.exists(os.path.join(src_dir, f)):
      shutil.copy(os.path.join(src_dir, f), os.path.join(dst_dir, f))
for name in ('cnn', 'autoencoder', 'resnet', 'vgg'):
  run = json.load(open(os.path.join(runs, name, 'run.json')))
  metrics = json.load(open(os.path.join(runs, name, 'eval', 'val', 'metrics.json')))
  row(name, metrics, run['wall_seconds'], run['command'])
  copy(os.path.join(runs, name, 'eval', 'val'), os.path.join(out, name), ('metrics.json', 'report.md'))
  copy(os.path.join(runs, name), os.path.join(out, name), ('curves.png', 'summary.json', 'run.json',
                                                           'reconstructions.png', 'warm_start.txt'))
ensemble_dir = os.path.join(runs, 'cnn', 'eval', 'validation_ensemble')
ensemble = json.load(open(os.path.join(ensemble_dir, 'metrics.json')))
row('ensemble of the four', ensemble, '-', 'see regenerate.sh')
copy(ensemble_dir, os.path.join(out, 'ensemble'), ('metrics.json', 'report.md'))
table = ['| model | accuracy [95% Wilson] | macro recall | macro F1 | macro precision | macro ROC AUC | wall s | command |',
         '|---|---|---|---|---|---|---|---|'] + rows
n = ensemble['n_images']
with open(os.path.join(out, 'README.md'), 'w') as f:
  f.write('# The study\'s model set, from scratch, at 128 px\n\n'
          f'Validation metrics of each run\'s best checkpoint (by validation macro recall) on the same {n}-image '
          'grouped validation split (split seed 0), 10 epochs each, 2-core CPU (wall time includes decoding and '
          'reports). Regenerate with `bash results/models/regenerate.sh`.\n\n' + '\n'.join(table) + '\n\n'
          'Read with care: each best checkpoint is chosen on this same validation split, so these figures are '
          f'optimistic, and on {n} images one image is {100 / n:.1f} points of accuracy: the intervals overlap. '
          'results/cv holds the cross-validated figure for the CNN at 256 px.\n')
print('\n'.join(table))
PY
