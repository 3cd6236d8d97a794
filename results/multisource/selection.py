"""Writes the selection tables of configs/multisource.py from the selection runs' validation metrics: never typed by hand.

  python results/multisource/selection.py weighting results/multisource/selection   (select.sh: selection.md)
  python results/multisource/selection.py recipe results/multisource/selection      (select_recipe.sh: recipe.md)
  python results/multisource/selection.py augment results/multisource/selection     (select_augment.sh: augment.md)
  python results/multisource/selection.py lr results/multisource/selection          (select_lr.sh: lr.md)

Every rule: the variant whose worse source has the higher validation macro recall wins (seed 0; augment's second
stage and lr, the mean over seeds 0-2); a tie goes to the variant listed first (the simpler, cheaper one).
"""

import json
import os
import sys

# (variant, its validation metrics file in the folder, what it is).
WEIGHTING = (('balanced', 'balanced_validation_metrics.json', 'source_weighting=balanced'),
             ('none', 'none_validation_metrics.json', 'source_weighting=none'),
             ('within_source', 'within_source_validation_metrics.json', 'source_weighting=within_source'))
RECIPE = (('10 epochs', 'balanced_validation_metrics.json', '10 epochs, constant learning rate, no augmentation'),
          ('20 epochs', 'recipe/20_epochs_validation_metrics.json', '--config.train.num_epochs=20'),
          ('20 epochs + augmentation', 'recipe/augment_20_epochs_validation_metrics.json',
           '--config.train.num_epochs=20 --config.augment.enabled=True (configs/cnn.py\'s augment ranges)'),
          ('10 epochs, cosine', 'recipe/cosine_validation_metrics.json',
           '--config.train.lr_schedule=cosine (Adam 1e-3 decayed to 0 over the run)'))
AUGMENT = (('as it stands', 'augment/as_it_stands_seed_0_validation_metrics.json',
             'configs/multisource.py before this step: within_source weighting, no augmentation'),
           ('exposure', 'augment/exposure_seed_0_validation_metrics.json',
            'brightness and contrast only (configs/cnn.py\'s ranges)'),
           ('exposure + shift', 'augment/exposure_shift_seed_0_validation_metrics.json',
            'brightness, contrast and shift (configs/cnn.py\'s ranges)'))
# Stage 2 of select_augment.sh: seed 0's winner and the config as it stands, over seeds 0, 1 and 2.
AUGMENT_SEEDS = (('as it stands', 'augment/as_it_stands_seed_{seed}_validation_metrics.json', 'no augmentation'),
                 ('exposure + shift', 'augment/exposure_shift_seed_{seed}_validation_metrics.json',
                  'brightness, contrast and shift'))
LR_SEEDS = (('as it stands', 'augment/as_it_stands_seed_{seed}_validation_metrics.json', 'Adam 1e-3'),
            ('lr 5e-4', 'lr/lr_5e-4_seed_{seed}_validation_metrics.json', '--config.train.learning_rate=5e-4'))
SEEDS = (0, 1, 2)
HEADERS = {
    'weighting': ('# Source weighting, chosen on validation (seed 0)', 'bash results/multisource/select.sh',
                  'selection.md', 'Rule (fixed after the balanced run\'s figures, before the others\' were read)'),
    'recipe': ('# Training length, augmentation and learning-rate schedule, chosen on validation (seed 0)',
               'bash results/multisource/select_recipe.sh', 'recipe.md',
               'Rule (fixed after the 20-epoch run\'s figures, before the augmented and cosine runs\' were read)'),
    'augment': ('# Exposure and shift augmentation on the within_source config, on validation',
                'bash results/multisource/select_augment.sh', 'augment.md',
                'Stage 1, seed 0. Rule (fixed before either augmented run\'s figures were read)'),
    'lr': ('# Learning rate on the within_source config, on validation over 3 seeds',
           'bash results/multisource/select_lr.sh', 'lr.md', 'Rule (fixed before the lr 5e-4 runs\' figures were read)'),
}


def _rows(name: str, setting: str, metrics: dict) -> list[str]:
  """One table row per source of a run's validation metrics."""
  rows = []
  for source, row in metrics['per_source'].items():
    recalls = ', '.join(f'{c} {v["recall"]:.3f} (n {v["support"]})' for c, v in row['per_class'].items()
                        if v['support'])
    rows.append(f'| {name} | {setting} | {metrics.get("checkpoint_step", "")} | {source} | {row["n_images"]} | '
                f'{row["accuracy"]:.3f} | {row["macro_avg"]["recall"]:.3f} | {recalls} |')
  return rows


def _worse_source(metrics: dict) -> float:
  return min(row['macro_avg']['recall'] for row in metrics['per_source'].values())


def _chosen(scores: dict[str, float]) -> str:
  """The highest score; a tie goes to the variant listed first."""
  return max(scores, key=lambda name: (round(scores[name], 6), -list(scores).index(name)))


def _load(folder: str, file_name: str) -> dict:
  with open(os.path.join(folder, file_name)) as f:
    return json.load(f)


def _write(path: str, lines: list[str]) -> None:
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


TABLE_HEAD = ['| variant | setting | best step | source | images | accuracy | macro recall | recall per class |',
              '|---|---|---|---|---|---|---|---|']


def main(kind: str, folder: str) -> None:
  title, command, out_name, rule = HEADERS[kind]
  variants = {'weighting': WEIGHTING, 'recipe': RECIPE, 'augment': AUGMENT}[kind]
  lines = [title, '', f'Command: `{command}`. {rule}: the variant whose worse source has the higher validation macro '
           'recall wins; a tie goes to the one listed first.', ''] + TABLE_HEAD
  lower = {}
  for name, file_name, setting in variants:
    metrics = _load(folder, file_name)
    lines += _rows(name, setting, metrics)
    lower[name] = _worse_source(metrics)
  chosen = _chosen(lower)
  taken = ' (configs/multisource.py)' if kind != 'augment' else ''
  lines += ['', 'Worse source\'s macro recall: ' + ', '.join(f'{w} {v:.3f}' for w, v in lower.items()) +
            f'. Chosen: **{chosen}**{taken}.']
  if kind == 'augment':
    lines += ['', '## Stage 2: seed 0\'s winner against the config as it stands, seeds 0, 1 and 2', '',
              'Added after stage 1: configs/multisource.py took exposure + shift and regenerate.sh\'s 3 seeds fell '
              'behind. Rule: the higher mean over the seeds of the worse source\'s macro recall wins; a tie goes to '
              'the config as it stands.', ''] + _seed_table(folder, AUGMENT_SEEDS)
  _write(os.path.join(folder, out_name), lines)


def _seed_table(folder: str, variants: tuple[tuple[str, str, str], ...]) -> list[str]:
  """Every seed's rows of each variant, the worse source per seed, and the variant with the higher mean."""
  lines = list(TABLE_HEAD)
  means = {}
  for name, pattern, setting in variants:
    scores = []
    for seed in SEEDS:
      metrics = _load(folder, pattern.format(seed=seed))
      lines += _rows(f'{name}, seed {seed}', setting, metrics)
      scores.append(_worse_source(metrics))
    means[name] = sum(scores) / len(scores)
    lines.append(f'| {name} | worse source per seed: ' + ', '.join(f'{v:.3f}' for v in scores) +
                 f'; mean **{means[name]:.3f}** | | | | | | |')
  return lines + ['', 'Mean over seeds of the worse source\'s macro recall: ' +
                  ', '.join(f'{w} {v:.3f}' for w, v in means.items()) +
                  f'. Chosen: **{_chosen(means)}** (configs/multisource.py).']


def main_seeds(kind: str, folder: str) -> None:
  """A choice made on the mean over seeds 0-2 alone (select_lr.sh: lr.md)."""
  title, command, out_name, rule = HEADERS[kind]
  lines = [title, '', f'Command: `{command}`. {rule}: the higher mean over seeds 0, 1 and 2 of the worse source\'s '
           'validation macro recall wins; a tie goes to the one listed first.', ''] + _seed_table(folder, LR_SEEDS)
  _write(os.path.join(folder, out_name), lines)


if __name__ == '__main__':
  (main_seeds if sys.argv[1] == 'lr' else main)(*sys.argv[1:])
