"""Cross-validation and seed repeats: train.train_and_evaluate once per fold or seed, each run's validation
metrics reported as mean ± std, and the runs' validation predictions pooled (in memory) into one evaluation.

Writes WORKDIR/fold_K/ or WORKDIR/seed_S/ (one training run each) and WORKDIR/cv/ or WORKDIR/seeds/ (metrics.json,
report.md, pooled/).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from lungjax import evaluate, final_evaluation, metrics as metrics_lib, train
from lungjax.report import markdown as report, report_html
from lungjax.runtime import distributed, workdir as workdir_lib
from lungjax.experiments import loso
from lungjax.data import loading, splits


def is_repeated(config: ml_collections.ConfigDict) -> bool:
  """True when the config asks for several runs: folds (config.cv.folds > 1), seeds (config.seeds > 1) or leave one
  source out (config.cv.by_source, lungjax/experiments/loso.py)."""
  return config.cv.folds > 1 or config.seeds > 1 or bool(config.cv.by_source)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains K folds (config.cv.folds > 1) or N seeds (config.seeds > 1) under workdir; returns the summary.

  The config is assumed valid (config_check.validate); one run (neither above 1) is train.train_and_evaluate's.
  """
  assert is_repeated(config), 'crossval.run needs config.cv.folds > 1, config.seeds > 1 or config.cv.by_source'
  with workdir_lib.owned(workdir):  # Each run's folder under it is claimed and locked too.
    if config.cv.by_source:  # Leave one source out (over config.seeds seeds).
      return loso.leave_one_source_out(config, workdir)
    return cross_validate(config, workdir) if config.cv.folds > 1 else repeat_over_seeds(config, workdir)


def cross_validate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains one model per grouped, stratified fold of train; pools the out-of-fold predictions."""
  root, loaded = loading.load_training_folder(config)
  decoded = loaded.decoded
  grouped = loading.grouping(decoded, config, loaded.folder)
  folds = splits.grouped_stratified_folds(loading.split_strata(decoded), grouped.groups_N, config.cv.folds,
                                          config.data.split_seed)
  runs = {}
  for k, (train_indices, val_indices) in enumerate(folds):
    logging.info('fold %d of %d: %d train, %d validation', k + 1, len(folds), len(train_indices), len(val_indices))
    run_dir = os.path.join(workdir, f'fold_{k}')
    data = loading.TrainingData(root, loaded, decoded.subset(train_indices), decoded.subset(val_indices), grouped)
    runs[run_dir] = _validation(train.train_and_evaluate(config, run_dir, data), run_dir)
  return summarise_runs(config, runs, os.path.join(workdir, 'cv'), f'{config.name}: {len(folds)}-fold CV', pool=True)


def repeat_over_seeds(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the same split with seeds seed, seed+1, ..., seed+seeds-1 (init, shuffling, dropout)."""
  data = loading.load_training_data(config)
  runs = {}
  for offset in range(config.seeds):
    seed_config = copy.deepcopy(config)
    with seed_config.unlocked():
      seed_config.seed = config.seed + offset
    run_dir = os.path.join(workdir, f'seed_{seed_config.seed}')
    runs[run_dir] = _validation(train.train_and_evaluate(seed_config, run_dir, data), run_dir)
  return summarise_runs(config, runs, os.path.join(workdir, 'seeds'), f'{config.name}: {config.seeds} seeds',
                        pool=True, repeats=config.seeds)


def _validation(summary: final_evaluation.RunSummary, run_dir: str) -> final_evaluation.Validation:
  """A finished run's validation predictions, as its eval/val/ files hold them (probabilities to 6 decimals, as in
  predictions.csv, so that the pooled numbers are those of the runs' own reports)."""
  if summary.validation is None:
    raise ValueError(f'{run_dir}: the run has no validation images to report over runs (config.data.val_fraction)')
  validation = summary.validation
  as_written_NC = np.asarray([[float(f'{p:.6f}') for p in row] for row in validation.probabilities_NC],
                             np.float64).reshape(validation.probabilities_NC.shape)
  return dataclasses.replace(validation, probabilities_NC=as_written_NC)




def summarise_runs(config: ml_collections.ConfigDict, runs: dict[str, final_evaluation.Validation], out_dir: str,
                   title: str, *, pool: bool, repeats: int = 1) -> dict[str, Any]:
  """Writes out_dir/metrics.json and report.md: each metric's mean ± std over runs (and pooled, if asked).

  runs: {run folder: its best checkpoint's validation predictions and metrics}, in run order.

  repeats=1 pools folds (each image predicted once); repeats=R pools R runs on the same images (seeds): the
  pooled intervals then resample images with all R of their predictions and count images, not predictions.
  """
  classes = tuple(config.data.classes)
  result: dict[str, Any] = {'runs': list(runs), 'n_runs': len(runs),
                            'summary': metrics_lib.mean_and_std([run.metrics for run in runs.values()], classes)}
  os.makedirs(out_dir, exist_ok=True)
  if pool:
    pooled_labels = np.concatenate([run.labels_N for run in runs.values()])
    pooled_probabilities = np.concatenate([run.probabilities_NC for run in runs.values()])
    pooled = metrics_lib.with_uncertainty(
        evaluate.evaluation_metrics(pooled_labels, pooled_probabilities, classes), pooled_labels,
        pooled_probabilities, n_bootstrap=config.eval.n_bootstrap, seed=config.seed, repeats=repeats)
    pooled['caveat'] = config.eval.caveat
    result['pooled' if repeats > 1 else 'pooled_out_of_fold'] = pooled
    if distributed.is_main_process():  # Multi-host: process 0 writes the reports.
      what = f'{repeats} runs\' predictions of each image pooled' if repeats > 1 else 'pooled out-of-fold'
      plots = report.write_evaluation(pooled, os.path.join(out_dir, 'pooled'), f'{title}, {what}',
                                      pooled_labels, pooled_probabilities)
      report_html.write_report_html(os.path.join(out_dir, 'pooled'), pooled, f'{title}, {what}', plots)
  if distributed.is_main_process():
    report.write_metrics_json(result, os.path.join(out_dir, 'metrics.json'))
    workdir_lib.write_text(os.path.join(out_dir, 'report.md'), runs_markdown(result, title))
  logging.info('%s: %s', title, ', '.join(f'{k} {v["mean"]:.3f} ± {v["std"]:.3f}'
                                          for k, v in result['summary'].items() if k.startswith(('acc', 'macro'))))
  return result


def _interval_text(metrics: dict[str, Any], *keys: str) -> str:
  """'[lo, hi]' of metrics['intervals'][keys...] (Wilson's for accuracy)."""
  value = metrics['intervals']
  for key in keys:
    value = value[key]
  lo, hi = value['wilson'] if isinstance(value, dict) else value
  return f'[{lo:.3f}, {hi:.3f}]'


def runs_markdown(result: dict[str, Any], title: str) -> str:
  """A table of each metric's mean ± std and per-run values, and the pooled confusion matrix if present."""
  lines = [f'# {title}', '', f'{result["n_runs"]} runs; validation metrics of each run\'s best checkpoint.', '',
           '| metric | mean ± std | per run |', '|---|---|---|']
  for name, row in result['summary'].items():
    lines.append(f'| {name} | {row["mean"]:.3f} ± {row["std"]:.3f} | '
                 + ', '.join(f'{v:.3f}' for v in row['values']) + ' |')
  pooled = result.get('pooled_out_of_fold') or result.get('pooled')
  if pooled is not None:
    if 'pooled_out_of_fold' in result:
      lines += ['', f'Pooled out-of-fold predictions ({pooled["n_images"]} images, each predicted once by the model '
                'that did not train on it): see `pooled/report.md`.']
    else:
      repeats = pooled['intervals']['repeats']
      lines += ['', f'Pooled predictions of the {repeats} runs ({pooled["n_images"]} = {repeats} x '
                f'{pooled["n_images"] // repeats} images): see `pooled/report.md`. Its intervals resample images with '
                f'all {repeats} of their predictions and count {pooled["n_images"] // repeats} images, not '
                f'{pooled["n_images"]} predictions; the spread between seeds is the ± above.']
    lines += ['', f'Accuracy {pooled["accuracy"]:.3f} {_interval_text(pooled, "accuracy")}, macro recall '
              f'{pooled["macro_avg"]["recall"]:.3f} {_interval_text(pooled, "macro_avg", "recall")}, macro F1 '
              f'{pooled["macro_avg"]["f1"]:.3f} {_interval_text(pooled, "macro_avg", "f1")}.', '',
              '| true \\ predicted | ' + ' | '.join(pooled['classes']) + ' |',
              '|---' * (len(pooled['classes']) + 1) + '|']
    for name, row in zip(pooled['classes'], pooled['confusion_matrix']):
      lines.append(f'| {name} | ' + ' | '.join(str(v) for v in row) + ' |')
  return '\n'.join(lines) + '\n'
