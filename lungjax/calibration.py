"""Temperature scaling: a cross-fitted fit on the validation split, its record (calibration.json), and serving.

The validation split already chose the checkpoint, and an ECE measured on the very images a temperature was
fitted on flatters it. So the fit is cross-fitted: the validation images are split into K class-stratified folds,
each fold's images are scaled by a temperature fitted on the other K - 1 folds only, and the ECE of those
out-of-fold probabilities is the after-scaling ECE reported for the validation split. The temperature that is
served (by lungjax.tools.predict and on other folders) is then fitted on all the validation images.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
from absl import logging

from lungjax import metrics as metrics_lib
from lungjax.runtime import workdir as workdir_lib
from lungjax.metrics import apply_temperature, fit_temperature  # Kept in metrics.py; served from here too.

METHOD = 'temperature scaling'
DEFAULT_FOLDS = 5
FILENAME = 'calibration.json'
# Probabilities are clipped here before their log is taken (a float32 softmax can round a class to 0).
_MIN_PROBABILITY = 1e-12
NOTE = ('The validation split that the temperature was fitted on also selected the checkpoint (the best step), so '
        'it is not independent of the model. ece_calibrated_out_of_fold scales each validation image only by a '
        'temperature fitted on the other folds, which keeps an image out of its own fit but not out of the '
        'checkpoint choice; a folder used for neither gives the unbiased figure.')


@dataclasses.dataclass(frozen=True)
class CrossFit:
  """A cross-fitted temperature: the served one, each fold's, and every image's out-of-fold calibration."""

  temperature: float  # Fitted on all the images: the one to serve.
  fold_temperatures: tuple[float, ...]  # fold_temperatures[k] was fitted on every image outside fold k.
  folds_N: np.ndarray  # Each image's fold.
  calibrated_NC: np.ndarray  # Row i scaled by fold_temperatures[folds_N[i]]: a temperature fitted without image i.
  seed: int

  @property
  def n_folds(self) -> int:
    return len(self.fold_temperatures)


def log_probabilities(probabilities_NC: np.ndarray) -> np.ndarray:
  """log(p) in float64, p clipped to [1e-12, 1]: logits up to a per-row constant, which softmax ignores."""
  return np.log(np.clip(np.asarray(probabilities_NC, np.float64), _MIN_PROBABILITY, 1.0))


def scale_probabilities(probabilities_NC: np.ndarray, temperature: float) -> np.ndarray:
  """softmax(log(p) / temperature): the same as softmax(logits / temperature) (float64)."""
  return apply_temperature(log_probabilities(probabilities_NC), temperature)


def stratified_folds(labels_N: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
  """Assigns each image a fold in [0, n_folds): each class shuffled (seeded) and dealt round-robin.

  Classes continue the deal where the previous one stopped, so fold sizes differ by at most one.
  """
  labels_N = np.asarray(labels_N, np.int64)
  if n_folds < 2 or n_folds > len(labels_N):
    raise ValueError(f'cross-fitting needs 2 <= folds <= the number of images ({len(labels_N)}), got {n_folds}')
  rng = np.random.default_rng(seed)
  folds_N = np.empty(len(labels_N), np.int64)
  dealt = 0
  for label in np.unique(labels_N):
    members = rng.permutation(np.flatnonzero(labels_N == label))
    folds_N[members] = (dealt + np.arange(len(members))) % n_folds
    dealt += len(members)
  return folds_N


def cross_fit(labels_N: np.ndarray, probabilities_NC: np.ndarray, n_folds: int = DEFAULT_FOLDS,
              seed: int = 0) -> CrossFit:
  """Fits the served temperature on all images and, per fold, one on the other folds applied to that fold.

  n_folds is lowered to the number of images when there are fewer (each fold keeps at least one image).
  """
  labels_N = np.asarray(labels_N, np.int64)
  logits_NC = log_probabilities(probabilities_NC)
  n_folds = min(n_folds, len(labels_N))
  folds_N = stratified_folds(labels_N, n_folds, seed)
  calibrated_NC = np.empty_like(logits_NC)
  fold_temperatures = []
  for fold in range(n_folds):
    held_out = folds_N == fold
    temperature = fit_temperature(labels_N[~held_out], logits_NC[~held_out])
    calibrated_NC[held_out] = apply_temperature(logits_NC[held_out], temperature)
    fold_temperatures.append(temperature)
  return CrossFit(temperature=fit_temperature(labels_N, logits_NC), fold_temperatures=tuple(fold_temperatures),
                  folds_N=folds_N, calibrated_NC=calibrated_NC, seed=seed)


def record(fit: CrossFit, labels_N: np.ndarray, probabilities_NC: np.ndarray, checkpoint_step: int,
           n_bins: int = metrics_lib.ECE_BINS) -> dict[str, Any]:
  """What calibration.json holds: the served temperature and how it was fitted and checked.

  A fitted temperature that makes calibration worse on its own out-of-fold check (ece_calibrated_out_of_fold above
  ece_raw) is not served: `temperature` is then 1.0 (the raw softmax), `fitted_temperature` keeps the fit and
  `served` says why.
  """
  ece_raw = metrics_lib.expected_calibration_error(labels_N, probabilities_NC, n_bins)
  ece_out_of_fold = metrics_lib.expected_calibration_error(labels_N, fit.calibrated_NC, n_bins)
  worse = ece_out_of_fold > ece_raw
  served = (f'T = 1.0 (none): the fitted T = {fit.temperature:.3f} made calibration worse on its own out-of-fold '
            f'check (ECE {ece_raw:.3f} raw, {ece_out_of_fold:.3f} out of fold), so the raw softmax is served'
            if worse else f'the fitted T = {fit.temperature:.3f} (out-of-fold ECE {ece_out_of_fold:.3f}, raw '
            f'{ece_raw:.3f})')
  if worse:
    logging.warning('calibration: %s', served)
  return {
      'method': METHOD,
      'temperature': 1.0 if worse else fit.temperature,
      'fitted_temperature': fit.temperature,
      'served': served,
      'fitted_on': {'split': 'validation', 'n_images': int(len(labels_N)), 'checkpoint_step': int(checkpoint_step)},
      'cross_fit': {'folds': fit.n_folds, 'seed': fit.seed, 'stratified_by': 'class',
                    'fold_temperatures': list(fit.fold_temperatures)},
      'n_bins': n_bins,
      'ece_raw': ece_raw,
      'ece_calibrated_out_of_fold': ece_out_of_fold,
      'note': NOTE,
  }


def path(workdir: str) -> str:
  """Where training writes the calibration record."""
  return os.path.join(workdir, FILENAME)


def write(workdir: str, calibration: dict[str, Any]) -> None:
  """Writes the record to workdir/calibration.json."""
  workdir_lib.write_json(path(workdir), calibration)


def read(workdir: str) -> dict[str, Any] | None:
  """workdir's calibration record, or None where the run fitted none; ValueError names a bad file."""
  file = path(workdir)
  if not os.path.exists(file):
    return None
  calibration = workdir_lib.read_json(file)
  temperature = calibration.get('temperature')
  if not isinstance(temperature, (int, float)) or not np.isfinite(temperature) or temperature <= 0:
    raise ValueError(f'{file}: temperature={temperature!r} is not a finite number > 0')
  return calibration


def served_temperature(workdir: str, checkpoint_step: int | None = None) -> float:
  """The temperature to serve workdir's predictions with: its calibration.json's, or 1.0 (none) without one.

  checkpoint_step: the step that predicts. A temperature fitted for another step (the best step deleted, another
  step asked for) is never paired with it: 1.0 (the raw softmax) is served, with a warning saying so.
  """
  calibration = read(workdir)
  if calibration is None:
    return 1.0
  fitted_on = calibration.get('fitted_on')
  fitted_step = fitted_on.get('checkpoint_step') if isinstance(fitted_on, dict) else None
  if checkpoint_step is not None and fitted_step is not None and int(fitted_step) != int(checkpoint_step):
    logging.warning('%s: the temperature T = %.3f was fitted for checkpoint step %d, not step %d that predicts: '
                    'serving T = 1.0 (the raw softmax)', path(workdir), float(calibration['temperature']),
                    int(fitted_step), int(checkpoint_step))
    return 1.0
  return float(calibration['temperature'])


def out_of_fold_summary(fit: CrossFit, labels_N: np.ndarray, n_bins: int, served: str = '') -> dict[str, Any]:
  """metrics['calibration'] additions for the images the temperature was fitted on: the out-of-fold ECE (and
  `served`, calibration.json's line on which temperature is served)."""
  return {'temperature': fit.temperature, 'fold_temperatures': list(fit.fold_temperatures),
          **({'served': served} if served else {}),
          'ece_calibrated': metrics_lib.expected_calibration_error(labels_N, fit.calibrated_NC, n_bins),
          'calibrated_by': 'out of fold',
          'calibrated_how': f'each image scaled by the temperature fitted on the other {fit.n_folds - 1} '
                            f'of {fit.n_folds} class-stratified folds (seed {fit.seed}; fold T '
                            f'{min(fit.fold_temperatures):.3f} to {max(fit.fold_temperatures):.3f}), never on itself; '
                            f'these images also fitted the served T = {fit.temperature:.3f} and chose the checkpoint'}


def served_summary(calibration: dict[str, Any], labels_N: np.ndarray, probabilities_NC: np.ndarray, n_bins: int,
                   checkpoint_step: int | None = None) -> dict[str, Any]:
  """metrics['calibration'] additions for another folder: the served temperature of `calibration` applied.

  checkpoint_step: the step that predicted this folder; the text says so when the temperature was fitted for another.
  """
  temperature = float(calibration['temperature'])
  fitted_on = calibration.get('fitted_on')
  fitted_on = fitted_on if isinstance(fitted_on, dict) else {}  # Records before cross-fitting held a string.
  fitted_step = fitted_on.get('checkpoint_step')
  if checkpoint_step is None or fitted_step is None or fitted_step == checkpoint_step:
    mismatch = ''
  else:  # Never paired with another step (as lungjax.load serves it): the raw softmax, said so.
    mismatch = (f' (it was fitted for step {fitted_step}, not this step {checkpoint_step}: T = 1.0, the raw softmax, '
                'is what is served and applied here)')
    temperature = 1.0
  calibrated_NC = scale_probabilities(probabilities_NC, temperature)
  return {'temperature': temperature,
          'ece_calibrated': metrics_lib.expected_calibration_error(labels_N, calibrated_NC, n_bins),
          'calibrated_by': 'served temperature',
          'calibrated_how': f'the served T = {temperature:.3f}, fitted on the run\'s validation split '
                            f'({fitted_on.get("n_images", "?")} images, checkpoint step '
                            f'{fitted_on.get("checkpoint_step", "?")}), applied unchanged to this folder' + mismatch}
