"""Writes the selection tables of configs/multisource.py from the selection runs' validation metrics: never typed by hand.

  python results/multisource/selection.py weighting results/multisource/selection   (select.sh: selection.md)
  python results/multisource/selection.py recipe results/multisource/selection      (select_recipe.sh: recipe.md)
  python results/multisource/selection.py augment results/multisource/selection     (select_augment.sh: augment.md)

Every rule: the variant whose worse source has the higher validation macro recall wins; a tie goes to the variant
listed first (the simpler, cheaper one).
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
AUGMENT = (('as it stands', 'augment/as_it_stands_validation_metrics.json',
             'configs/multisource.py before this step: within_source weighting, no augmentation'),
           ('exposure', 'augment/exposure_validation_metrics.json',
            'brightness and contrast only (configs/cnn.py\'s ranges)'),
           ('exposure + shift', 'augment/exposure_shift_validation_metrics.json',
            'brightness, contrast and shift (configs/cnn.py\'s ranges)'))
HEADERS = {
    'weighting': ('# Source weighting, chosen on validation (seed 0)', 'bash results/multisource/select.sh',
                  'selection.md', 'Rule (fixed after the balanced run\'s figures, before the others\' were read)'),
    'recipe': ('# Training length, augmentation and learning-rate schedule, chosen on validation (seed 0)',
               'bash results/multisource/select_recipe.sh', 'recipe.md',
               'Rule (fixed after the 20-epoch run\'s figures, before the augmented and cosine runs\' were read)'),
    'augment': ('# Exposure and shift augmentation on the within_source config, chosen on validation (seed 0)',
                'bash results/multisource/select_augment.sh', 'augment.md',
                'Rule (fixed before either augmented run\'s figures were read)'),
}


def main(kind: str, folder: str) -> None:
  title, command, out_name, rule = HEADERS[kind]
  variants = {'weighting': WEIGHTING, 'recipe': RECIPE, 'augment': AUGMENT}[kind]
  lines = [title, '', f'Command: `{command}`. {rule}: the variant whose worse source has the higher validation macro '
           'recall wins; a tie goes to the one listed first.', '',
           '| variant | setting | best step | source | images | accuracy | macro recall | recall per class |',
           '|---|---|---|---|---|---|---|---|']
  lower = {}
  for name, file_name, setting in variants:
    with open(os.path.join(folder, file_name)) as f:
      metrics = json.load(f)
    for source, row in metrics['per_source'].items():
      recalls = ', '.join(f'{c} {v["recall"]:.3f} (n {v["support"]})' for c, v in row['per_class'].items()
                          if v['support'])
      lines.append(f'| {name} | {setting} | {metrics.get("checkpoint_step", "")} | {source} | {row["n_images"]} | '
                   f'{row["accuracy"]:.3f} | {row["macro_avg"]["recall"]:.3f} | {recalls} |')
    lower[name] = min(row['macro_avg']['recall'] for row in metrics['per_source'].values())
  chosen = max(lower, key=lambda name: (round(lower[name], 6), -list(lower).index(name)))
  lines += ['', 'Worse source\'s macro recall: ' + ', '.join(f'{w} {v:.3f}' for w, v in lower.items()) +
            f'. Chosen: **{chosen}** (configs/multisource.py).']
  with open(os.path.join(folder, out_name), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main(*sys.argv[1:])
