"""Collects the candidates' leave-one-source-out runs into results/robust/selection/ (RULE.md, amendment 1).

  python results/robust/selection/summarize.py ROOT

ROOT holds one workdir per candidate (select.sh's names). For each candidate with a finished `loso/metrics.json`
this copies its table (report.md) and metrics.json into selection/NAME/, and writes candidates.md / candidates.json:
the measure (worst held-out source's macro recall, seed means), each held-out source's macro recall, the pooled
accuracy, the seeds run, the measured seconds per training step and the projected time of the done-when training
(three sources, 10 epochs) that rule 1's eligibility is judged on. Nothing here chooses: the choice is written by
hand into selection.md from these figures and RULE.md. Files go through lungjax's safe writer (atomic, never through
a link or over a file it did not write): select.sh removes the previous outputs first and the writer's manifest
after, as results/markers/regenerate.sh does.
"""

import glob
import json
import math
import os
import statistics
import sys

from lungjax.runtime import workdir as workdir_lib

# RULE.md's candidates, in its numbering.
CANDIDATES = (
    (1, 'study', 'configs/cnn.py as is (flatten head)'),
    (2, 'gap', "config.model.head='gap'"),
    (3, 'gap_pre', "2 + preprocess working_size=512, crop_borders, intensity='clahe'"),
    (4, 'gap_pre_aug', '3 + the source augmentations at 0.5 (crop, gamma, resolution, blur, noise, pad, jpeg)'),
    (5, 'gap_pre_aug_lungs', "4 + preprocess lungs='crop'"),
    (6, 'resnet18_gap', 'ResNet-18 (global pooling) at 224 px with the preprocessing and augmentation of 4'),
)
# The done-when training's images: every shared labelled film, 251 + 1,000 + 313, of which config.data.val_fraction
# (0.2) is validation (the grouped split keeps near copies together, so this is approximate to a step or two).
FULL_TRAIN_IMAGES = round(0.8 * (251 + 1000 + 313))
EPOCHS, BATCH = 10, 16
LIMIT_S = 30 * 60


def _fold_timing(run_dir: str) -> tuple[float, int] | None:
  """Seconds per step of one fold's training, and its steps, if it trained in one go (not resumed)."""
  path = os.path.join(run_dir, 'summary.json')
  if not os.path.exists(path):
    return None
  summary = json.load(open(path))
  steps = summary['num_steps'] - summary.get('first_step_this_run', 0)
  if summary.get('first_step_this_run', 0) or steps <= 0:
    return None
  return summary['train_seconds_this_run'] / steps, steps


def main(root: str) -> None:
  out_dir = os.path.dirname(os.path.abspath(__file__))
  rows, records = [], {}
  full_steps = EPOCHS * math.ceil(FULL_TRAIN_IMAGES / BATCH)
  for number, name, change in CANDIDATES:
    metrics_path = os.path.join(root, name, 'loso', 'metrics.json')
    fold_dirs = sorted(glob.glob(os.path.join(root, name, 'held_out_*', 'seed_*')))
    timings = [t for t in (_fold_timing(d) for d in fold_dirs) if t]
    seconds_per_step = statistics.median(t[0] for t in timings) if timings else float('nan')
    projected_s = seconds_per_step * full_steps
    if not os.path.exists(metrics_path):
      # Stopped before its last fold (rule 1 made it ineligible): the folds it finished, each on its own.
      finished = {}
      for run_dir in fold_dirs:
        held_path = os.path.join(run_dir, 'eval', 'held_out', 'metrics.json')
        if os.path.exists(held_path):
          held = json.load(open(held_path))
          finished[held['source']] = held['macro_avg']['recall']
      if not finished:
        rows.append(f'| {number} | `{name}` | {change} | not run yet | | | | | | |')
        continue
      records[name] = dict(number=number, change=change, seeds=[0], measure=None, finished_folds=finished,
                           seconds_per_step=seconds_per_step, folds_timed=len(timings),
                           projected_full_training_s=projected_s, eligible=projected_s < LIMIT_S)
      sources = ', '.join(f'{s} {v:.3f}' for s, v in finished.items())
      rows.append(f'| {number} | `{name}` | {change} | [0], {len(finished)} of 3 folds (stopped) | none | {sources} | '
                  f'| {seconds_per_step:.2f} | {projected_s / 60:.1f} | {"yes" if projected_s < LIMIT_S else "no"} |')
      continue
    metrics = json.load(open(metrics_path))
    for file in ('report.md', 'metrics.json'):
      with open(os.path.join(root, name, 'loso', file), encoding='utf-8') as f:
        workdir_lib.write_text(os.path.join(out_dir, name, file), f.read(), root=out_dir)
    selection = metrics['selection']
    per_source = selection['per_source_mean']
    record = dict(number=number, change=change, seeds=metrics['seeds'], measure=selection['value'],
                  worst_source=selection['source'], worst_per_seed=selection['worst_per_seed'],
                  per_source_macro_recall=per_source, pooled_accuracy=metrics['pooled']['accuracy'],
                  seconds_per_step=seconds_per_step, folds_timed=len(timings), projected_full_training_s=projected_s,
                  eligible=projected_s < LIMIT_S)
    records[name] = record
    sources = ', '.join(f'{s} {v:.3f}' for s, v in per_source.items())
    rows.append(f'| {number} | `{name}` | {change} | {record["seeds"]} | **{record["measure"]:.3f}** '
                f'({record["worst_source"]}) | {sources} | {record["pooled_accuracy"]:.3f} | '
                f'{seconds_per_step:.2f} | {projected_s / 60:.1f} | {"yes" if record["eligible"] else "no"} |')
  lines = [
      '# Candidates for configs/robust.py: leave-one-source-out figures', '',
      'Generated by `python results/robust/selection/summarize.py ROOT` from the runs of `select.sh` (the rule: '
      '[RULE.md](RULE.md), amendment 1). Measure: the worst held-out source\'s macro recall (seed means). Each '
      "candidate's whole table, with intervals and per-class recall: `NAME/report.md`.", '',
      f'Projected training: the median seconds per step of the candidate\'s own LOSO folds (those trained in one go, '
      f'on this 2-core CPU) x {full_steps} steps (the done-when training: ~{FULL_TRAIN_IMAGES} training films, '
      f'{EPOCHS} epochs of {BATCH}); eligible under 30 min (rule 1).', '',
      '| # | candidate | change from configs/cnn.py | seeds | measure (worst source) | held-out macro recall per source '
      '| pooled held-out accuracy | s/step | projected min | eligible |',
      '|---|---|---|---|---|---|---|---|---|---|', *rows, '']
  workdir_lib.write_text(os.path.join(out_dir, 'candidates.md'), '\n'.join(lines), root=out_dir)
  workdir_lib.write_json(os.path.join(out_dir, 'candidates.json'), records, root=out_dir, indent=1)
  print('\n'.join(lines))


if __name__ == '__main__':
  main(sys.argv[1])
