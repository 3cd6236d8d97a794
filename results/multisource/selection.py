"""Writes selection.md from the two selection runs' validation metrics (see select.sh): never typed by hand."""

import json
import os
import sys


def main(folder: str) -> None:
  lines = ['# Source weighting, chosen on validation (seed 0)', '',
           'Command: `bash results/multisource/select.sh`. Rule (fixed after the balanced run\'s figures, before the '
           'none run\'s were read): the weighting whose worse '
           'source has the higher validation macro recall wins.', '',
           '| source_weighting | source | images | accuracy | macro recall | recall per class |', '|---|---|---|---|---|---|']
  lower = {}
  for weighting in ('balanced', 'none'):
    with open(os.path.join(folder, f'{weighting}_validation_metrics.json')) as f:
      metrics = json.load(f)
    for source, row in metrics['per_source'].items():
      recalls = ', '.join(f'{c} {v["recall"]:.3f} (n {v["support"]})' for c, v in row['per_class'].items()
                          if v['support'])
      lines.append(f'| {weighting} | {source} | {row["n_images"]} | {row["accuracy"]:.3f} | '
                   f'{row["macro_avg"]["recall"]:.3f} | {recalls} |')
    lower[weighting] = min(row['macro_avg']['recall'] for row in metrics['per_source'].values())
  chosen = max(lower, key=lower.get)
  lines += ['', f'Worse source\'s macro recall: ' + ', '.join(f'{w} {v:.3f}' for w, v in lower.items()) +
            f'. Chosen: **{chosen}** (configs/multisource.py).']
  with open(os.path.join(folder, 'selection.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main(*sys.argv[1:])
