"""Builds results/models/README.md and copies each run's reports from the workdirs regenerate.sh trained."""
import json, os, shutil, sys
runs, out = sys.argv[1], 'results/models'
rows = []
def load(*parts):
  return json.load(open(os.path.join(*parts)))
def seed_dirs(name):
  """The model's runs: seed_0, seed_1, ... under its workdir, or the workdir itself for a single run."""
  base = os.path.join(runs, name)
  seeds = sorted((d for d in os.listdir(base) if d.startswith('seed_')), key=lambda d: int(d.split('_')[1]))
  return [os.path.join(base, d) for d in seeds] or [base]
def spread(values):
  if len(values) == 1:
    return f'{values[0]:.3f}'
  mean = sum(values) / len(values)
  std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
  return f'{mean:.3f} ± {std:.3f}'
def row(name, per_seed, first, wall, command, versus):
  low, high = first['intervals']['accuracy']['wilson']
  cells = [spread([m['accuracy'] for m in per_seed]), spread([m['macro_avg']['recall'] for m in per_seed]),
           spread([m['macro_avg']['f1'] for m in per_seed]), spread([m['roc_auc']['macro'] for m in per_seed])]
  rows.append(f"| {name} | {len(per_seed)} | {' | '.join(cells)} | {first['accuracy']:.3f} [{low:.2f}, {high:.2f}] | "
              f"{versus} | {wall} | `{command}` |")
def copy(src_dir, dst_dir, names):
  os.makedirs(dst_dir, exist_ok=True)
  for f in names:
    if os.path.exists(os.path.join(src_dir, f)):
      shutil.copy(os.path.join(src_dir, f), os.path.join(dst_dir, f))
def versus_cnn(name):
  """'Δ accuracy [lo, hi], Δ macro recall [lo, hi], McNemar p' of the model's seed 0 minus the CNN's seed 0."""
  path = os.path.join(runs, 'compare', name, 'compare.json')
  if not os.path.exists(path):
    return '(the reference)'
  c = load(path)
  (acc, acc_lo, acc_hi), (rec, rec_lo, rec_hi) = c['difference']['accuracy'], c['difference']['macro_recall']
  copy(os.path.dirname(path), os.path.join(out, 'compare', name), ('compare.json', 'compare.md'))
  return f'{acc:+.3f} [{acc_lo:+.2f}, {acc_hi:+.2f}]; {rec:+.3f} [{rec_lo:+.2f}, {rec_hi:+.2f}]; p {c["mcnemar_p"]:.2g}'
shutil.rmtree(out + '/compare', ignore_errors=True)
for name in ('cnn', 'autoencoder', 'resnet', 'vgg'):
  shutil.rmtree(os.path.join(out, name), ignore_errors=True)
  run = load(runs, name, 'run.json')
  dirs = seed_dirs(name)
  per_seed = [load(d, 'eval', 'val', 'metrics.json') for d in dirs]
  row(name, per_seed, per_seed[0], run['wall_seconds'], run['command'], versus_cnn(name))
  for d in dirs:
    dst = os.path.join(out, name, os.path.basename(d)) if len(dirs) > 1 else os.path.join(out, name)
    copy(os.path.join(d, 'eval', 'val'), dst, ('metrics.json', 'report.md', 'confusion_matrix.png'))
    copy(d, dst, ('curves.png', 'summary.json', 'reconstructions.png', 'warm_start.txt'))
  copy(os.path.join(runs, name), os.path.join(out, name), ('run.json',))
  if len(dirs) > 1:
    copy(os.path.join(runs, name, 'seeds'), os.path.join(out, name), ('metrics.json', 'report.md'))
ensemble_dir = os.path.join(seed_dirs('cnn')[0], 'eval', 'validation_ensemble')
ensemble = load(ensemble_dir, 'metrics.json')
row('ensemble of the four seed-0 runs', [ensemble], ensemble, '-', 'see regenerate.sh', '-')
shutil.rmtree(out + '/ensemble', ignore_errors=True)
copy(ensemble_dir, os.path.join(out, 'ensemble'), ('metrics.json', 'report.md'))
table = ['| model | seeds | accuracy | macro recall | macro F1 | macro ROC AUC | seed 0: accuracy [95% Wilson] | '
         'seed 0 minus CNN seed 0: accuracy, macro recall [95% paired bootstrap]; McNemar p | wall s | command |',
         '|---|---|---|---|---|---|---|---|---|---|'] + rows
n = ensemble['n_images']
with open(os.path.join(out, 'README.md'), 'w') as f:
  f.write('# The study\'s model set, from scratch, at 128 px\n\n'
          f'Validation metrics of each run\'s best checkpoint (by validation macro recall) on the same {n}-image '
          'grouped validation split (split seed 0) of the clean shared train folder, 10 epochs each, on a 2-core CPU. '
          'Where a model has several seeds the figures are mean ± std over them (each seed\'s reports are in its '
          '`seed_K/` folder, the summary in `metrics.json` / `report.md`). The comparison column pairs each model\'s '
          'seed 0 with the CNN\'s seed 0 on the same images (`python -m lungjax.tools.compare`, reports in `compare/`): '
          'the difference with a 95% paired bootstrap interval and McNemar\'s exact test on the images only one of '
          'the two got right. Wall time is the whole command\'s (all its seeds), including decoding and reports, '
          'on a machine shared with other jobs: it varies with load. Regenerate with '
          '`bash results/models/regenerate.sh` (the table alone: `python results/models/table.py workdirs/results-models`).\n\n'
          + '\n'.join(table) + '\n\n'
          'Read with care: each best checkpoint is chosen on this same validation split, so these figures are '
          f'optimistic, and on {n} images one image is {100 / n:.1f} points of accuracy: the intervals overlap. '
          'results/cnn holds the study\'s CNN at 256 px over 5 seeds, results/cv its cross-validated figure.\n')
print('\n'.join(table))
index = 'results/README.md'  # The same table in the index, between its markers.
start, end = '<!-- models table: written by results/models/table.py -->', '<!-- /models table -->'
text = open(index).read()
head, rest = text.split(start)
with open(index, 'w') as f:
  f.write(head + start + '\n' + '\n'.join(table) + '\n' + end + rest.split(end, 1)[1])
