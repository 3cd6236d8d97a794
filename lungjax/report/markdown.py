"""Write what an evaluation found: metrics.json, report.md (the study's table, goals, intervals), and plots."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from lungjax import metrics as metrics_lib
from lungjax.runtime import workdir as workdir_lib
from lungjax.data import folders

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


def _interval_at(metrics: dict[str, Any], keys: Sequence[str]) -> list[float] | None:
  """Returns the [lo, hi] stored under metrics['intervals'][keys...] (Wilson's for accuracy), or None."""
  value = metrics.get('intervals')
  for key in keys:
    if not isinstance(value, dict) or key not in value:
      return None
    value = value[key]
  return value.get('wilson') if isinstance(value, dict) else value


def _with_interval(value: float | None, interval: Sequence[float] | None) -> str:
  """Formats a value as `0.910 [0.820, 0.960]`, or `0.910` without an interval, or `n/a` without a value."""
  if value is None:
    return 'n/a'
  return f'{value:.3f}' if interval is None else f'{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]'


def write_metrics_json(metrics: dict[str, Any], path: str) -> None:
  """Writes the metrics dict as indented JSON."""
  workdir_lib.write_json(path, metrics)


def _uncertainty_markdown(metrics: dict[str, Any]) -> list[str]:
  """Returns the ROC AUC table, the calibration lines and how to read the intervals, for what metrics holds."""
  lines = []
  if 'roc_auc' in metrics:
    auc = metrics['roc_auc']
    lines += ['', '## ROC AUC (one class vs the rest)', '', '| class | ROC AUC |', '|---|---|']
    for name, value in auc['per_class'].items():
      lines.append(f'| {name} | {_with_interval(value, _interval_at(metrics, ("roc_auc", "per_class", name)))} |')
    lines.append(f'| macro | {_with_interval(auc["macro"], _interval_at(metrics, ("roc_auc", "macro")))} |')
    if None in auc['per_class'].values():
      lines += ['', 'n/a: the folder has no image of that class (or only that class), so its AUC is undefined; '
                'the macro AUC averages the others.']
  if 'calibration' in metrics:
    calibration = metrics['calibration']
    lines += ['', '## Calibration', '',
              f'Expected calibration error (top label, {calibration["n_bins"]} equal-width confidence bins), raw: '
              f'{calibration["ece"]:.3f}.']
    if 'ece_calibrated' in calibration:
      lines.append(f'ECE after temperature scaling, {calibration["calibrated_by"]}: '
                   f'{calibration["ece_calibrated"]:.3f} ({calibration["calibrated_how"]}).')
    if calibration.get('served'):
      lines.append(f'Served: {calibration["served"]}.')
  if 'intervals' in metrics:
    intervals, n = metrics['intervals'], metrics['n_images']
    lo, hi = intervals['accuracy']['wilson']
    percent = round(100 * intervals['confidence'])
    bootstrap = _with_interval(metrics['accuracy'], intervals['accuracy']['bootstrap'])
    if 'methods' in intervals:
      wilson = (f'Accuracy\'s, and each class\'s precision (PPV), recall (sensitivity), specificity and NPV, are '
                f'Wilson score intervals from their counts (accuracy\'s bootstrap gives {bootstrap}); F1, ROC AUC, '
                'PR AUC, MCC, Brier score, log loss and the macro and weighted averages')
    else:
      wilson = f'Accuracy\'s is the Wilson score interval (the bootstrap gives {bootstrap}); the others'
    fallback = ['.'.join(keys) for keys in intervals.get('methods', {}).get('wilson_fallback', [])]
    if fallback:
      fallback_text = (' Where every resample gave the same value (a perfect or all-wrong score), a percentile '
                       'interval would have zero width although other images could score otherwise; there the '
                       'interval is instead the Wilson interval of the value read as a proportion of the smallest '
                       'count it rests on (the class\'s support, its fewer of positives and negatives, or the '
                       f'images; see lungjax.metrics.bootstrap_intervals): {", ".join(fallback)}.')
    else:
      fallback_text = ''
    lines += ['', '## How to read the intervals', '',
              f'Each `value [low, high]` is a {percent}% interval. {wilson} come from a stratified bootstrap: '
              f'{intervals["n_bootstrap"]} resamples of these images, '
              f'drawn with replacement within each true class (so every class keeps its support; seed '
              f'{intervals["seed"]}), read off as percentiles.{fallback_text} On {n} images one image is '
              f'{100 / max(n, 1):.1f} points of accuracy; the Wilson interval of {metrics["accuracy"]:.2f} on {n} '
              f'images spans [{lo:.3f}, {hi:.3f}], about ±{(hi - lo) / 2:.2f}. The intervals cover only the '
              'luck of which images were drawn: not a different training run, and not images from other '
              'hospitals or populations. Two models whose intervals overlap widely are not told apart by this '
              f'folder, and a goal is met with confidence only when its whole interval is above {GOAL_THRESHOLD:.2f}.']
  return lines


def _absent_class_markdown(metrics: dict[str, Any]) -> list[str]:
  """Says where predictions of classes this folder does not hold went, and from which true classes."""
  lines = []
  counts = np.asarray(metrics['confusion_matrix'])
  for c, name in enumerate(metrics['classes']):
    if metrics['per_class'][name]['support'] == 0 and counts[:, c].sum() > 0:
      sources = ', '.join(f'{counts[t, c]} {metrics["classes"][t]}' for t in range(len(counts)) if counts[t, c])
      lines.append(f'- {name} is absent from this folder, yet {counts[:, c].sum()} images were predicted as '
                   f'{name}: {sources}.')
  return ['', '## Predictions of absent classes', ''] + lines if lines else []


# Scores that need images of the class: without any they are undefined, shown as n/a rather than 0 (metrics.json: null,
# with null_reasons saying why; metrics.json files written before that kept a 0 beside support 0).
_NEED_SUPPORT = frozenset({'recall', 'f1', 'sensitivity'})


def _class_cell(metrics: dict[str, Any], name: str, key: str) -> str:
  """One class's `value [lo, hi]`, or n/a for a score that needs images of a class the folder does not hold."""
  if key in _NEED_SUPPORT and metrics['per_class'][name]['support'] == 0:
    return 'n/a (no images)'
  return _with_interval(metrics['per_class'][name][key], _interval_at(metrics, ('per_class', name, key)))


# The clinical table's columns: (heading, per_class key).
_CLINICAL = (('sensitivity', 'sensitivity'), ('specificity', 'specificity'), ('PPV', 'ppv'), ('NPV', 'npv'),
             ('PR AUC', 'pr_auc'))


def _clinical_markdown(metrics: dict[str, Any]) -> list[str]:
  """Returns the per-class sensitivity, specificity, PPV, NPV and PR AUC table and the MCC, Brier and log loss line,
  each `value [lo, hi]`; nothing for metrics written before they existed."""
  if not all('sensitivity' in row for row in metrics['per_class'].values()):
    return []
  lines = ['', '## Clinical metrics (each class vs the rest)', '',
           '| class | ' + ' | '.join(heading for heading, _ in _CLINICAL) + ' |', '|---' * (len(_CLINICAL) + 1) + '|']
  for name in metrics['per_class']:
    cells = [_class_cell(metrics, name, k) for _, k in _CLINICAL]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  lines += ['', 'Sensitivity is recall and PPV precision, from the predicted (highest-probability) class; PR AUC is '
            'the average precision of the class\'s probability (n/a without images of the class, or of the others).']
  for path, why in metrics.get('null_reasons', {}).items():
    if '.recall' not in path and '.f1' not in path:  # An absent class's recall is said above ('n/a (no images)').
      lines.append(f'- n/a `{path}` (null in metrics.json): {why}.')
  if 'mcc' in metrics:
    mcc, brier, log_loss = (_with_interval(metrics[key], _interval_at(metrics, (key,)))
                            for key in ('mcc', 'brier', 'log_loss'))
    lines += ['', f'Matthews correlation (multiclass): {mcc}; Brier score (mean over images of the sum over classes '
              f'of (p - one-hot)², 0 best, 2 worst): {brier}; log loss: {log_loss}.']
  return lines


def _per_source_markdown(metrics: dict[str, Any]) -> list[str]:
  """The per-source table (images, accuracy, macro recall, each class's recall, with intervals) and what each
  source lacks; nothing for one source."""
  per_source = metrics.get('per_source')
  if not per_source:
    return []
  classes = metrics['classes']
  lines = ['', '## Per source', '',
           '| source | images | accuracy | macro recall | ' + ' | '.join(f'{c} recall' for c in classes) + ' |',
           '|---' * (len(classes) + 4) + '|']
  for name, row in [*per_source.items(), ('pooled', metrics)]:
    recalls = [_with_interval(row['per_class'][c]['recall'], _interval_at(row, ('per_class', c, 'recall')))
               if row['per_class'][c]['support'] else 'n/a (none)' for c in classes]
    lines.append(f'| {name} | {row["n_images"]} | {_with_interval(row["accuracy"], _interval_at(row, ("accuracy",)))} '
                 f'| {_with_interval(row["macro_avg"]["recall"], _interval_at(row, ("macro_avg", "recall")))} | '
                 + ' | '.join(recalls) + ' |')
  lines += ['', 'Each source\'s metrics are computed on its images alone (metrics.json: per_source.<name>, with the '
            'same keys as the pooled metrics); its macro recall averages the classes it holds.']
  for name, lacking in metrics.get('source_missing_classes', {}).items():
    what = 'no image at all here' if len(lacking) == len(classes) else f'no {" or ".join(lacking)} images'
    lines.append(f'- {name} has {what}: its scores say nothing about {"it" if len(lacking) == len(classes) else "them"},'
                 ' and a model may tie a class to the look of the sources that do hold it.')
  return lines


def _per_subgroup_markdown(metrics: dict[str, Any]) -> list[str]:
  """Per column of config.eval.subgroups: the table of _per_source_markdown by subgroup, its class counts, the
  subgroups too small for numbers, and each class's largest recall gap with its interval; nothing without them."""
  subgroups = metrics.get('subgroups')
  if not subgroups:
    return []
  joined = subgroups['metadata']
  lines = ['', '## Per subgroup', '',
           f'Metadata `{joined["table"]}`: {joined["n_matched"]} of {joined["n_images"]} images have a row; '
           f'{joined["n_unmatched_images"]} have none (subgroup "no metadata row"), {joined["n_unmatched_rows"]} '
           'rows name no image here (metrics.json: subgroups.metadata lists them).']
  classes = metrics['classes']
  for column, described in subgroups['columns'].items():
    rows = metrics.get('per_subgroup', {}).get(column, {})
    quartiles = ([f'Binned at the quartiles of its values (named without bins): {", ".join(described["bins"])}.', '']
                 if described.get('bins_from') == 'quartiles' else [])
    lines += ['', f'### {column}', '', *quartiles,
              f'| {column} | images | accuracy | macro recall | ' + ' | '.join(f'{c} recall' for c in classes) + ' |',
              '|---' * (len(classes) + 4) + '|']
    for name, row in rows.items():
      recalls = [_with_interval(row['per_class'][c]['recall'], _interval_at(row, ('per_class', c, 'recall')))
                 if row['per_class'][c]['support'] else 'n/a (none)' for c in classes]
      lines.append(f'| {name} | {row["n_images"]} | '
                   f'{_with_interval(row["accuracy"], _interval_at(row, ("accuracy",)))} | '
                   f'{_with_interval(row["macro_avg"]["recall"], _interval_at(row, ("macro_avg", "recall")))} | '
                   + ' | '.join(recalls) + ' |')
    minimum = subgroups['min_images']
    if described['too_small']:
      lines += ['', f'Too small to say anything (under {minimum} images, no numbers): ' + ', '.join(
          f'{t["value"]} ({t["n_images"]})' for t in described['too_small']) + '.']
    lines += ['', 'Class counts: ' + '; '.join(
        f'{value} ' + ', '.join(f'{c} {n}' for c, n in row['per_class'].items()) for value, row in
        described['counts'].items()) + '.', '']
    for name, gap in described['recall_gaps'].items():
      if gap['gap'] is None:
        lines.append(f'- {name} recall: no gap measured ({gap["reason"]}).')
      else:
        lo, hi = gap['interval']
        verdict = ('the interval excludes 0' if lo > 0 or hi < 0 else
                   'the interval includes 0: these images do not tell the groups apart')
        lines.append(f'- {name} recall: largest gap {gap["gap"]:.3f} [{lo:.3f}, {hi:.3f}] between {gap["high"]} '
                     f'({gap["recalls"][gap["high"]]:.3f}, {gap["n_class_images"][gap["high"]]} images) and '
                     f'{gap["low"]} ({gap["recalls"][gap["low"]]:.3f}, {gap["n_class_images"][gap["low"]]}); '
                     f'{verdict}.')
  lines += ['', 'Each subgroup\'s metrics are computed on its images alone (metrics.json: per_subgroup.<column>.'
            '<value>, the keys of per_source). A gap is the highest minus the lowest subgroup\'s recall among those '
            f'with {subgroups["min_images"]} or more images of the class; picking the extremes biases it upwards, '
            'so read its interval.']
  return lines


# The plots write_evaluation draws, in the order report.md shows them: (file name, alt text).
PLOTS = (('confusion_matrix.png', 'confusion matrix'), ('roc.png', 'ROC curves'), ('pr.png', 'precision-recall curves'),
         ('reliability.png', 'reliability diagram'))


def report_markdown(metrics: dict[str, Any], title: str, plots: Sequence[str] = ()) -> str:
  """Returns the study's classification table, the clinical table, the confusion matrix and the goals as markdown;
  `plots` (file names of PLOTS beside report.md) are embedded with relative links, so a viewer shows one page."""
  lines = [f'# {title}', '']
  details = [f'{metrics["n_images"]} images']
  if metrics.get('checkpoint_step') is not None:
    details.append(f'checkpoint step {metrics["checkpoint_step"]}')
  if metrics.get('skipped_images'):
    details.append(f'{len(metrics["skipped_images"])} undecodable files skipped (listed below)')
  if metrics.get('averaged'):
    details.append(metrics['averaged']['description'] + ': ' + ', '.join(
        f'{c["workdir"]} step {c["step"]}' for c in metrics['averaged']['checkpoints']))
  lines += [', '.join(details) + '.', '', '| | precision | recall | f1-score | support |', '|---|---|---|---|---|']
  scores = ('precision', 'recall', 'f1')
  for name, row in metrics['per_class'].items():
    cells = [_class_cell(metrics, name, k) for k in scores]
    lines.append(f'| {name} | ' + ' | '.join(cells) + f' | {row["support"]} |')
  n = metrics['n_images']
  lines.append(f'| accuracy | | | {_with_interval(metrics["accuracy"], _interval_at(metrics, ("accuracy",)))} | {n} |')
  for label, key in (('macro avg', 'macro_avg'), ('weighted avg', 'weighted_avg')):
    cells = [_with_interval(metrics[key][k], _interval_at(metrics, (key, k))) for k in scores]
    lines.append(f'| {label} | ' + ' | '.join(cells) + f' | {n} |')
  if metrics['macro_avg_classes'] != metrics['classes']:
    lines += ['', f'Macro averages run over the classes present: {", ".join(metrics["macro_avg_classes"])}.']
  lines += _per_source_markdown(metrics)
  lines += _per_subgroup_markdown(metrics)
  lines += _clinical_markdown(metrics)
  lines += ['', '## Confusion matrix (rows: true, columns: predicted)', '',
            '| true \\ predicted | ' + ' | '.join(metrics['classes']) + ' |',
            '|---' * (len(metrics['classes']) + 1) + '|']
  for name, row in zip(metrics['classes'], metrics['confusion_matrix']):
    lines.append(f'| {name} | ' + ' | '.join(str(v) for v in row) + ' |')
  lines += ['', f'## The study\'s goals (each > {GOAL_THRESHOLD:.2f})', '']
  if 'intervals' in metrics:
    lines += [f'| goal | value | met | interval above {GOAL_THRESHOLD:.2f} |', '|---|---|---|---|']
  else:
    lines += ['| goal | value | met |', '|---|---|---|']
  for label, keys in STUDY_GOALS:
    value, interval = _lookup(metrics, keys), _interval_at(metrics, keys)
    row = f'| {label} | {_with_interval(value, interval)} | {"yes" if value > GOAL_THRESHOLD else "no"} |'
    if 'intervals' in metrics:
      row += f' {"n/a" if interval is None else "yes" if interval[0] > GOAL_THRESHOLD else "no"} |'
    lines.append(row)
  lines += _absent_class_markdown(metrics)
  lines += _uncertainty_markdown(metrics)
  if metrics.get('overlap_with_training') is not None:
    overlap = metrics['overlap_with_training']
    lines += ['', '## Copies of training images in this folder', '']
    if overlap:
      lines += [f'{len(overlap)} of these images are exact or near copies of training images (the audit\'s test): '
                'their predictions say little about new patients.', '', '| file | training file | kind | r |',
                '|---|---|---|---|']
      lines += [f'| `{o["file"]}` | `{o["training_file"]}` | {o["kind"]} | {o["score"]:.3f} |' for o in overlap]
    else:
      lines.append('None found: no image here is an exact or near copy of a training image.')
  if metrics.get('caveat'):
    lines += ['', '## Caveat', '', metrics['caveat']]
  if metrics.get('skipped_images'):
    lines += ['', '## Skipped files', '']
    lines += [f'- `{path}`: {reason}' for path, reason in metrics['skipped_images']]
  shown = [(name, alt) for name, alt in PLOTS if name in plots]
  if shown:
    lines += ['', '## Plots', ''] + [f'![{alt}]({name})' for name, alt in shown]
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
  workdir_lib.write_figure(path, fig, dpi=120, metadata=_PNG_METADATA)
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
  workdir_lib.write_figure(path, fig, dpi=120, metadata=_PNG_METADATA)
  plt.close(fig)


def plot_roc(labels_N: np.ndarray, probabilities_NC: np.ndarray, classes: Sequence[str], path: str) -> None:
  """Draws one one-vs-rest ROC curve per class (AUC in the legend) and the chance diagonal."""
  labels_N = np.asarray(labels_N)
  auc = metrics_lib.roc_auc(labels_N, probabilities_NC, len(classes))
  fig, ax = plt.subplots(figsize=(4.8, 4.4))
  ax.plot([0, 1], [0, 1], '--', color='grey', lw=1, label='chance (AUC 0.5)')
  for c, name in enumerate(classes):
    if auc['per_class'][c] is not None:
      fpr, tpr = metrics_lib.roc_curve(labels_N == c, np.asarray(probabilities_NC)[:, c])
      ax.plot(fpr, tpr, lw=1.8, label=f'{name} (AUC {auc["per_class"][c]:.3f})')
  macro = 'undefined' if auc['macro'] is None else f'{auc["macro"]:.3f}'
  ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel='false positive rate', ylabel='true positive rate',
         title=f'ROC, one class vs the rest (macro AUC {macro})')
  ax.grid(alpha=0.3)
  ax.legend(loc='lower right', fontsize=8)
  fig.tight_layout()
  workdir_lib.write_figure(path, fig, dpi=120, metadata=_PNG_METADATA)
  plt.close(fig)


def plot_pr(labels_N: np.ndarray, probabilities_NC: np.ndarray, classes: Sequence[str], path: str) -> None:
  """Draws one one-vs-rest precision-recall curve per class (steps; average precision in the legend) and each
  class's prevalence, the precision of a model that ranks at random."""
  labels_N, probabilities_NC = np.asarray(labels_N), np.asarray(probabilities_NC)
  fig, ax = plt.subplots(figsize=(4.8, 4.4))
  for c, name in enumerate(classes):
    positive_N = labels_N == c
    if positive_N.any() and not positive_N.all():
      recall, precision = metrics_lib.pr_curve(positive_N, probabilities_NC[:, c])
      ap = float(np.sum(np.diff(recall) * precision[1:]))
      line, = ax.step(recall, precision, where='post', lw=1.8, label=f'{name} (AP {ap:.3f})')
      ax.axhline(positive_N.mean(), color=line.get_color(), ls=':', lw=1)
  ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel='recall (sensitivity)', ylabel='precision (PPV)',
         title='Precision-recall, one class vs the rest\n(dotted: prevalence)')
  ax.grid(alpha=0.3)
  ax.legend(loc='lower left', fontsize=8)
  fig.tight_layout()
  workdir_lib.write_figure(path, fig, dpi=120, metadata=_PNG_METADATA)
  plt.close(fig)


def plot_reliability(labels_N: np.ndarray, probabilities_NC: np.ndarray, path: str,
                     n_bins: int = metrics_lib.ECE_BINS) -> None:
  """Draws accuracy per top-label confidence bin as bars against the diagonal, ECE in the title."""
  bins = metrics_lib.reliability_bins(labels_N, probabilities_NC, n_bins)
  ece = metrics_lib.expected_calibration_error(labels_N, probabilities_NC, n_bins)
  filled = bins['counts'] > 0
  width = 1.0 / n_bins
  fig, ax = plt.subplots(figsize=(4.8, 4.4))
  ax.bar(bins['edges'][:-1][filled], bins['accuracy'][filled], width=width, align='edge', edgecolor='black',
         alpha=0.8, label='accuracy')
  ax.plot(bins['confidence'][filled], bins['accuracy'][filled], 'k.', label='(mean confidence, accuracy)')
  ax.plot([0, 1], [0, 1], '--', color='grey', lw=1, label='perfect calibration')
  for left, count, value in zip(bins['edges'][:-1][filled], bins['counts'][filled], bins['accuracy'][filled]):
    ax.text(left + width / 2, value + 0.01, str(count), ha='center', va='bottom', fontsize=7)
  ax.set(xlim=(0, 1), ylim=(0, 1.08), xlabel='confidence (top class probability)', ylabel='accuracy',
         title=f'Reliability: ECE {ece:.3f} ({n_bins} bins, n per bar)')
  ax.grid(alpha=0.3)
  ax.legend(loc='upper left', fontsize=8)
  fig.tight_layout()
  workdir_lib.write_figure(path, fig, dpi=120, metadata=_PNG_METADATA)
  plt.close(fig)


def write_evaluation(metrics: dict[str, Any], out_dir: str, title: str, labels_N: np.ndarray | None = None,
                     probabilities_NC: np.ndarray | None = None) -> list[str]:
  """Writes metrics.json, report.md and confusion_matrix.png; also roc.png, pr.png and reliability.png given
  predictions. Returns the plots' file names (what report_html.write_report_html embeds)."""
  if (labels_N is None) != (probabilities_NC is None):
    raise ValueError('write_evaluation needs both labels_N and probabilities_NC (for roc.png, reliability.png) '
                     'or neither')
  os.makedirs(out_dir, exist_ok=True)
  title = folders.shown_name(title)  # A folder name that is not UTF-8: escaped, in the plot and the report.
  write_metrics_json(metrics, os.path.join(out_dir, 'metrics.json'))
  plot_confusion_matrix(metrics, os.path.join(out_dir, 'confusion_matrix.png'), title)
  plots = ['confusion_matrix.png']
  if labels_N is not None:
    plot_roc(labels_N, probabilities_NC, metrics['classes'], os.path.join(out_dir, 'roc.png'))
    plot_pr(labels_N, probabilities_NC, metrics['classes'], os.path.join(out_dir, 'pr.png'))
    plot_reliability(labels_N, probabilities_NC, os.path.join(out_dir, 'reliability.png'))
    plots += ['roc.png', 'pr.png', 'reliability.png']
  # After the plots it links to.
  # Valid UTF-8: a file name that is not (in the skipped or copied images' lists) is shown escaped.
  workdir_lib.write_text(os.path.join(out_dir, 'report.md'), folders.shown_name(report_markdown(metrics, title, plots)))
  return plots
