"""After training: the best checkpoint's reports on validation (with a fitted temperature) and test/, the curves,
summary.json and the model card."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from lungjax import calibration as calibration_lib, evaluate, inference, steps
from lungjax.runtime import distributed, workdir as workdir_lib
from lungjax.report import markdown as report, model_card, report_html
from lungjax.data import loading
from lungjax.models import create_model


@dataclasses.dataclass(frozen=True)
class Validation:
  """What the best checkpoint predicted on the validation split, as its eval/val/ files report it."""

  labels_N: np.ndarray
  probabilities_NC: np.ndarray
  metrics: dict[str, Any]  # eval/val/metrics.json's contents.


class RunSummary(dict):
  """summary.json's contents (a plain dict, as written), plus `validation` (None without a validation split): the
  best checkpoint's validation predictions, which crossval pools over runs in memory."""

  def __init__(self, summary: dict[str, Any], validation: Validation | None):
    super().__init__(summary)
    self.validation = validation


def _evaluation_entry(metrics: dict[str, Any], out_dir: str) -> dict[str, Any]:
  """summary.json's short record of one split's evaluation."""
  entry = {'dir': out_dir, 'accuracy': metrics['accuracy'], 'macro_avg': metrics['macro_avg']}
  if 'per_source' in metrics:
    entry['per_source'] = {
        source: {'n_images': row['n_images'], 'accuracy': row['accuracy'], 'macro_avg': row['macro_avg'],
                 'recall': {c: v['recall'] for c, v in row['per_class'].items() if v['support']}}
        for source, row in metrics['per_source'].items()}
  return entry


def _page_inputs(config: ml_collections.ConfigDict, workdir: str, summary: dict[str, Any],
                 best_state: steps.TrainState, best_step: int, run_fingerprint: dict[str, Any],
                 data: loading.TrainingData, mesh: Mesh | None = None,
                 eval_step: Callable[..., jax.Array] | None = None) -> report_html.PageInputs:
  """report.html's inputs after training: the best checkpoint's Grad-CAM, and the model card as it is about to be
  written (its validation headline left out: the page shows the validation metrics themselves, and before the
  evaluations eval/val/metrics.json may still be an earlier run's)."""
  card = model_card.model_card(workdir, config, summary, run_fingerprint, data, check_validation=False)
  card.pop('validation', None)
  model = inference.Model(config, create_model(config.model, len(config.data.classes)), best_state, best_step,
                          workdir, mesh=mesh, eval_step=eval_step)  # Training's step: compiled once.
  return report_html.PageInputs(model.explain_pixels, f'Grad-CAM of {config.explain.layer}', card,
                                'The model card of this run (the workdir\'s MODEL_CARD.md).')


def report_best_checkpoint(config: ml_collections.ConfigDict, workdir: str, summary: dict[str, Any],
                           eval_step: Callable[..., jax.Array], best_state: steps.TrainState, best_step: int,
                           mesh: Mesh, data: loading.TrainingData,
                           run_fingerprint: dict[str, Any]) -> RunSummary:
  """Evaluates best_state on validation and test/ and writes every report of the run; returns its summary.

  `summary` holds the training's record (steps, history, ...); this adds 'evaluations' (and 'temperature') and
  writes it to workdir/summary.json. On validation the temperature is cross-fitted (calibration.json) and the
  reported calibrated ECE is out of fold; test/ is checked for copies of training images.
  """
  summary = {**summary, 'evaluations': {}}
  history = summary['history']
  if distributed.is_main_process():  # The run's final outputs as one unit: its .complete is written last.
    workdir_lib.begin_unit(workdir)
  if history and distributed.is_main_process():
    report.plot_curves(history, os.path.join(workdir, 'curves.png'))
  split_folders = {}
  calibration = None
  validation = None
  if len(data.val):
    split_folders['val'] = loading.FolderImages(data.train_folder.folder, data.val, ())
    val_probabilities_NC = evaluate.predict_probabilities(eval_step, best_state, data.val, config.eval.batch_size,
                                                          mesh)
    if len(data.val) >= 2:  # Cross-fitting needs 2 folds of at least one image each.
      fit = calibration_lib.cross_fit(data.val.labels_N, val_probabilities_NC, calibration_lib.DEFAULT_FOLDS,
                                      config.seed)
      calibration = calibration_lib.record(fit, data.val.labels_N, val_probabilities_NC, best_step)
      summary['temperature'] = calibration['temperature']  # The served one (1.0 where the fit made ECE worse).
  if distributed.is_main_process():
    if calibration is not None:
      calibration_lib.write(workdir, calibration)
    elif os.path.exists(calibration_lib.path(workdir)):  # An earlier run's: not this checkpoint's.
      os.remove(calibration_lib.path(workdir))
  if calibration is None:
    logging.warning('%d validation images: no temperature fitted (cross-fitting needs 2)', len(data.val))
  if (test := data.load_test(config)) is not None:
    split_folders['test'] = test
  page = _page_inputs(config, workdir, summary, best_state, best_step, run_fingerprint, data, mesh, eval_step)
  for name, loaded in split_folders.items():
    out_dir = os.path.join(workdir, 'eval', name)
    title = f'{config.name} on {name}'
    if name == 'val':  # Already predicted to fit the temperature: its calibrated ECE is out of fold.
      metrics = evaluate.report_predictions(val_probabilities_NC, loaded, config, out_dir, title, best_step,
                                            calibration, calibration_fitted_here=True, page=page)
      validation = Validation(np.asarray(data.val.labels_N), np.asarray(val_probabilities_NC), metrics)
    else:
      metrics = evaluate.evaluate_and_report(eval_step, best_state, loaded, config, mesh, out_dir, title, best_step,
                                             calibration, training=data.train_folder.decoded, page=page)
    summary['evaluations'][name] = _evaluation_entry(metrics, out_dir)
  if distributed.is_main_process():
    workdir_lib.write_json(os.path.join(workdir, 'summary.json'), summary)
    model_card.write_model_card(workdir, config, summary, run_fingerprint, data)
    # model_card.json is left out: each --mode=eval rewrites it (whole) with its entry.
    workdir_lib.finish_unit(workdir, ['summary.json'] + (['curves.png'] if history else []) +
                            (['calibration.json'] if calibration is not None else []))
  distributed.barrier('train_and_evaluate')  # Every process returns once process 0's files are written.
  return RunSummary(summary, validation)
