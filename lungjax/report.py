"""Write what an evaluation found: metrics.json, report.md (the study's table and goals), and plots."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

# The study's goals, in its order of importance: each must exceed 0.90.
STUDY_GOALS = (('macro recall', ('macro_avg', 'recall')), ('macro F1', ('macro_avg', 'f1')),
               ('macro precision', ('macro_avg', 'precision')), ('accuracy', ('accuracy',)))
GOAL_THRESHOLD = 0.90
# PNGs carry no metadata at all (no software tag, no source image text).
_PNG_METADATA = {'Software': None}


def _lookup(metrics: dict[str, Any], keys: Sequence[str]) -> float:
  value = metrics
  for key in keys:
    value = value[key]
  return float(value)


def write_metrics_json(metrics: dict[str, Any], path: str) -> None:
  """Writes the metrics dict as indented JSON."""
  with open(path, 'w') as f:
    json.dump(metrics, f, indent=2)
    f.write('\n')


def report_markdown(metrics: dict[str, Any], title: str) -> str:
  """Returns the study's classification table, the confusion matrix and the four goals as markdown."""
  lines = [f'# {title}', '']
  details = [f'{metrics["n_images"]} images']
  if metrics.get('checkpoint_step') is not None:
    details.append(f'checkpoint step {metrics["checkpoint_step"]}')
  if metrics.get('skipped_images'):
    details.append(f'{len(metrics["skipped_images"])} undecodable files skipped (listed below)')
  lines += [', '.join(details) + '.', '', '| | precision | recall | f1-score | support |', '|---|---|---|---|---|']
  for name, row in metrics['per_class'].items():
    lines.append(f'| {name} | {row["precision"]:.3f} | {row["recall"]:.3f} | {row["f1"]:.3f} | {row["support"]} |')
  n = metrics['n_images']
  lines.append(f'| accuracy | | | {metrics["accuracy"]:.3f} | {n} |')
  for label, key in (('macro avg', 'macro_avg'), ('weighted avg', 'weighted_avg')):
    row = metrics[key]
    lines.append(f'| {label} | {row["precision"]:.3f} | {row["recall"]:.3f} | {row["f1"]:.3f} | {n} |')
  if metrics['macro_avg_classes'] != metrics['classes']:
    lines += ['', f'Macro averages run over the classes present: {", ".join(metrics["macro_avg_classes"])}.']
  lines += ['', '## Confusion matrix (rows: true, columns: predicted)', '',
            '| true \\ predicted | ' + ' | '.join(metrics['classes']) + ' |',
            '|---' * (len(metrics['classes']) + 1) + '|']
  for name, row in zip(metrics['classes'], metrics['confusion_matrix']):
    lines.append(f'| {name} | ' + ' | '.join(str(v) for v in row) + ' |')
  lines += ['', f'## The study\'s goals (each > {GOAL_THRESHOLD:.2f})', '', '| goal | value | met |', '|---|---|---|']
  for label, keys in STUDY_GOALS:
    value = _lookup(metrics, keys)
    lines.append(f'| {label} | {value:.3f} | {"yes" if value > GOAL_THRESHOLD else "no"} |')
  if metrics.get('skipped_images'):
    lines += ['', '## Skipped files', '']
    lines += [f'- `{path}`: {reason}' for path, reason in metrics['skipped_images']]
  return '\n'.join(lines) + '\n'


def plot_confusion_matrix(metrics: dict[str, Any], path: str, title: str) -> None:
  """Draws the confusion matrix with counts in each cell."""
  counts = metrics['confusion_matrix']
  classes = metrics['classes']
  fig, ax = plt.subplots(figsize=(4.8, 4.2))
  ax.imshow(counts, cmap='Blues')
  top = max(max(row) for row in counts) or 1
  for i, row in enumerate(counts):
    for j, value in enumerate(row):
      ax.text(j, i, str(value), ha='center', va='center', color='white' if value > top / 2 else 'black')
  ax.set_xticks(range(len(classes)), classes, rotation=20)
  ax.set_yticks(range(len(classes)), classes)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120, metadata=_PNG_METADATA)
  plt.close(fig)


def plot_curves(history: Sequence[dict[str, float]], path: str) -> None:
  """Draws the study's two graphs: train vs validation loss, and train vs validation accuracy, per epoch."""
  epochs = [row['epoch'] for row in history]
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
  for ax, name in zip(axes, ('loss', 'accuracy')):
    ax.plot(epochs, [row[f'train_{name}'] for row in history], 'o-', label=f'train {name}')
    if all(f'val_{name}' in row for row in history):
      ax.plot(epochs, [row[f'val_{name}'] for row in history], 's-', label=f'validation {name}')
    ax.set_xlabel('epoch')
    ax.set_title(name)
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120, metadata=_PNG_METADATA)
  plt.close(fig)


def write_evaluation(metrics: dict[str, Any], out_dir: str, title: str) -> None:
  """Writes metrics.json, report.md and confusion_matrix.png into out_dir."""
  os.makedirs(out_dir, exist_ok=True)
  write_metrics_json(metrics, os.path.join(out_dir, 'metrics.json'))
  with open(os.path.join(out_dir, 'report.md'), 'w') as f:
    f.write(report_markdown(metrics, title))
  plot_confusion_matrix(metrics, os.path.join(out_dir, 'confusion_matrix.png'), title)
