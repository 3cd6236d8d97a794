"""Builds the two evaluation folders of results/multisource/ from a mixed run's validation split (symbolic links).

  python results/multisource/held_out_folders.py MIXED_RUN_WORKDIR KAGGLE_ALONE_RUN_WORKDIR OUT_DIR

OUT_DIR/kaggle-val: the Kaggle-alone run's own validation images (its eval/val/predictions.csv), which the mixed run
also holds out (the split puts the main source first, lungjax/data/sources.strata); the script checks it.
OUT_DIR/sample-val: the radiography sample's images in the mixed run's validation split, under the class names.
Neither arm trained on either folder, so both arms are compared on the same images.
"""

import csv
import os
import sys


def read_rows(workdir: str) -> list[dict[str, str]]:
  with open(os.path.join(workdir, 'eval', 'val', 'predictions.csv'), newline='') as f:
    return list(csv.DictReader(f))


def link(rows: list[dict[str, str]], out_dir: str) -> None:
  for row in rows:
    folder = os.path.join(out_dir, row['true'])
    os.makedirs(folder, exist_ok=True)
    source = os.path.abspath(row['file'])
    target = os.path.join(folder, os.path.basename(source))
    if os.path.lexists(target):
      raise FileExistsError(f'{target}: two validation images share the name {os.path.basename(source)}')
    os.symlink(source, target)


def main(mixed: str, kaggle_alone: str, out_dir: str) -> None:
  mixed_rows, alone_rows = read_rows(mixed), read_rows(kaggle_alone)
  mixed_files = {os.path.abspath(r['file']) for r in mixed_rows}
  missing = [r['file'] for r in alone_rows if os.path.abspath(r['file']) not in mixed_files]
  if missing:
    raise SystemExit(f'{len(missing)} of the Kaggle-alone validation images were trained on by the mixed run: '
                     f'{missing[:3]}')
  sample = [r for r in mixed_rows if 'covid19-radiography-sample' in r['file']]
  link(alone_rows, os.path.join(out_dir, 'kaggle-val'))
  link(sample, os.path.join(out_dir, 'sample-val'))
  print(f'{out_dir}/kaggle-val: {len(alone_rows)} images; {out_dir}/sample-val: {len(sample)} images; the mixed run '
        f'held out {len(mixed_rows)} ({len(mixed_rows) - len(sample) - len(alone_rows)} other Kaggle images)')


if __name__ == '__main__':
  main(*sys.argv[1:])
