"""Builds results/models/README.md and copies each run's reports from the workdirs regenerate.sh trained."""
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
  copy(os.path.join(runs, name, 'eval', 'val'), os.path.join(out, name), ('metrics.json', 'report.md', 'confusion_matrix.png'))
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
          'grouped validation split (split seed 0), 10 epochs each, on a 2-core CPU. Wall time is one run\'s, including '
          'decoding and reports, on a machine shared with other jobs: it varies with load. Regenerate with '
          '`bash results/models/regenerate.sh` (the table alone: `python results/models/table.py workdirs/results-models`).\n\n' + '\n'.join(table) + '\n\n'
          'Read with care: each best checkpoint is chosen on this same validation split, so these figures are '
          f'optimistic, and on {n} images one image is {100 / n:.1f} points of accuracy: the intervals overlap. '
          'results/cv holds the cross-validated figure for the CNN at 256 px.\n')
print('\n'.join(table))
index = 'results/README.md'  # The same table in the index, between its markers.
start, end = '<!-- models table: written by results/models/table.py -->', '<!-- /models table -->'
text = open(index).read()
head, rest = text.split(start)
with open(index, 'w') as f:
  f.write(head + start + '\n' + '\n'.join(table) + '\n' + end + rest.split(end, 1)[1])
