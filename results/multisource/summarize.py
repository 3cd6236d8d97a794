"""Collects results/multisource/ from the runs' own files: summary.json and README tables are written, never typed.

  python results/multisource/summarize.py WORKDIRS_ROOT OUT_DIR

WORKDIRS_ROOT holds kaggle/seed_*/ and mixed/seed_*/ (each evaluated on folder-kaggle-val+sample-val) and the
shortcut reports under <arm>/seed_0/shortcuts/. Means and standard deviations are over seeds; each seed's interval is
the Wilson 95% interval its metrics.json gives.
"""

import glob
import json
import os
import statistics
import sys

ARMS = {'kaggle': 'Kaggle train alone', 'mixed': 'Kaggle train + radiography sample'}
EVAL = 'folder-kaggle-val+sample-val'
FIGURES = [  # (label, source, path into that source's metrics)
    ('Kaggle val accuracy', 'kaggle-val', ('accuracy',)),
    ('Kaggle val macro recall', 'kaggle-val', ('macro_avg', 'recall')),
    ('Kaggle val Covid recall', 'kaggle-val', ('per_class', 'Covid', 'recall')),
    ('Kaggle val Normal recall', 'kaggle-val', ('per_class', 'Normal', 'recall')),
    ('Kaggle val Viral Pneumonia recall', 'kaggle-val', ('per_class', 'Viral Pneumonia', 'recall')),
    ('adult sample accuracy', 'sample-val', ('accuracy',)),
    ('adult sample Covid recall', 'sample-val', ('per_class', 'Covid', 'recall')),
    ('adult sample Normal recall', 'sample-val', ('per_class', 'Normal', 'recall')),
]


def dig(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def interval(row, path):
  """The Wilson interval metrics.json gives for a proportion, else its bootstrap interval."""
  intervals = row.get('intervals', {})
  key = '.'.join(path)
  found = intervals.get(key) or intervals.get(path[-1] if len(path) == 1 else key)
  if isinstance(found, dict):
    found = found.get('wilson') or found.get('bootstrap')
  return found


def main(root: str, out_dir: str) -> None:
  summary = {'command': 'bash results/multisource/regenerate.sh', 'evaluated': EVAL, 'arms': {}}
  for arm in ARMS:
    seeds = sorted(glob.glob(os.path.join(root, arm, 'seed_*')))
    per_seed = []
    for workdir in seeds:
      with open(os.path.join(workdir, 'eval', EVAL, 'metrics.json')) as f:
        metrics = json.load(f)
      row = {'seed': os.path.basename(workdir), 'checkpoint_step': metrics['checkpoint_step']}
      for label, source, path in FIGURES:
        source_metrics = metrics['per_source'][source]
        row[label] = {'value': dig(source_metrics, path), 'n_images': source_metrics['n_images'],
                      'interval': interval(source_metrics, path)}
      per_seed.append(row)
    summary['arms'][arm] = {
        'description': ARMS[arm], 'seeds': per_seed,
        'mean': {label: statistics.mean(r[label]['value'] for r in per_seed) for label, _, _ in FIGURES},
        'std': {label: statistics.stdev(r[label]['value'] for r in per_seed) if len(per_seed) > 1 else 0.0
                for label, _, _ in FIGURES}}
    shortcut_files = sorted(glob.glob(os.path.join(root, arm, 'seed_0', 'shortcuts', '*', 'shortcuts.json')))
    summary['arms'][arm]['shortcuts_seed_0'] = {}
    for path in shortcut_files:
      with open(path) as f:
        found = json.load(f)
      summary['arms'][arm]['shortcuts_seed_0'][os.path.basename(os.path.dirname(path))] = {
          'views': found['views'], 'cam_share_in_lungs': found['cam_share_in_lungs']}
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  lines = ['| figure (validation images neither arm trained on) | ' + ' | '.join(ARMS.values()) + ' |',
           '|---|' + '---|' * len(ARMS)]
  for label, _, _ in FIGURES:
    cells = []
    for arm in ARMS:
      a = summary['arms'][arm]
      values = ', '.join(f'{r[label]["value"]:.3f}' for r in a['seeds'])
      cells.append(f'{a["mean"][label]:.3f} ± {a["std"][label]:.3f} ({values})')
    n = summary['arms']['kaggle']['seeds'][0][label]['n_images']
    lines.append(f'| {label} (n {n}) | ' + ' | '.join(cells) + ' |')
  lines += ['', '| shortcut check, seed 0 | view | ' + ' | '.join(ARMS.values()) + ' |', '|---|---|' + '---|' * len(ARMS)]
  folders = sorted(summary['arms']['kaggle']['shortcuts_seed_0'])
  for folder in folders:
    for view in ('as_is', 'lungs_hidden', 'lungs_only'):
      cells = []
      for arm in ARMS:
        v = summary['arms'][arm]['shortcuts_seed_0'].get(folder, {}).get('views', {}).get(view)
        cells.append('' if v is None else f'accuracy {v["accuracy"]:.3f}; recall ' + ', '.join(
            f'{c} {r:.2f}' for c, r in v['recall'].items() if r is not None))
      lines.append(f'| {folder} | {view} | ' + ' | '.join(cells) + ' |')
    cells = []
    for arm in ARMS:
      share = summary['arms'][arm]['shortcuts_seed_0'].get(folder, {}).get('cam_share_in_lungs', {})
      cells.append(', '.join(f'{c} {s:.2f}' for c, s in share.items() if s is not None))
    lines.append(f'| {folder} | Grad-CAM share in lungs | ' + ' | '.join(cells) + ' |')
  with open(os.path.join(out_dir, 'tables.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main(*sys.argv[1:])
