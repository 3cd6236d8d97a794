"""Pure functions over (labels, probabilities): P/R/F1, accuracy, ROC AUC, calibration, and their uncertainty."""

from __future__ import annotations

import functools
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(labels_N: np.ndarray, predictions_N: np.ndarray, num_classes: int) -> np.ndarray:
  """Returns counts[true, predicted] as a num_classes x num_classes int64 array."""
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (np.asarray(labels_N, np.int64), np.asarray(predictions_N, np.int64)), 1)
  return counts


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  """Elementwise numerator / denominator, 0 where the denominator is 0 (sklearn's zero_division=0)."""
  return np.divide(numerator, denominator, out=np.zeros(numerator.shape, np.float64), where=denominator > 0)


def classification_metrics(
    labels_N: np.ndarray, probabilities_NC: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
  """Returns accuracy, per-class and macro/weighted precision, recall, F1, and the confusion matrix.

  The macro average runs over the classes present in `labels_N` (support > 0), so a folder that holds
  only some of the classes is not penalised for the absent ones; `macro_avg_classes` names them.
  """
  labels_N = np.asarray(labels_N, np.int64)
  predictions_N = np.asarray(probabilities_NC).argmax(axis=-1)
  counts = confusion_matrix(labels_N, predictions_N, len(classes))
  true_positives = np.diag(counts).astype(np.float64)
  support = counts.sum(axis=1)
  precision = _ratio(true_positives, counts.sum(axis=0))
  recall = _ratio(true_positives, support)
  f1 = _ratio(2 * precision * recall, precision + recall)
  present = support > 0

  def average(weights: np.ndarray) -> dict[str, float]:
    return {name: float(np.average(values, weights=weights)) if weights.sum() else 0.0
            for name, values in (('precision', precision), ('recall', recall), ('f1', f1))}

  return {
      'accuracy': float(true_positives.sum() / max(len(labels_N), 1)),
      'macro_avg': average(present.astype(np.float64)),
      'weighted_avg': average(support.astype(np.float64)),
      'per_class': {name: {'precision': float(precision[c]), 'recall': float(recall[c]), 'f1': float(f1[c]),
                           'support': int(support[c])} for c, name in enumerate(classes)},
      'confusion_matrix': counts.tolist(),
      'classes': list(classes),
      'macro_avg_classes': [name for c, name in enumerate(classes) if present[c]],
      'n_images': int(len(labels_N)),
  }


def mean_cross_entropy(labels_N: np.ndarray, probabilities_NC: np.ndarray) -> float:
  """Returns the unweighted mean cross-entropy of the true classes' probabilities."""
  true_probabilities = np.asarray(probabilities_NC, np.float64)[np.arange(len(labels_N)), labels_N]
  return float(-np.log(np.clip(true_probabilities, 1e-12, 1.0)).mean())


def scalar_summary(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
  """Flattens the headline numbers (accuracy, macro P/R/F1) into {prefix_name: value} for logging."""
  summary = {f'{prefix}accuracy': metrics['accuracy']}
  summary.update({f'{prefix}macro_{k}': v for k, v in metrics['macro_avg'].items()})
  return summary


# --- Uncertainty: Wilson and stratified-bootstrap intervals, ROC AUC, calibration, temperature scaling. ---

ECE_BINS = 15
_LOG_TEMPERATURE_RANGE = (float(np.log(1e-2)), float(np.log(1e2)))
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


def _checked(labels_N: np.ndarray, probabilities_NC: np.ndarray, name: str = 'probabilities_NC'
             ) -> tuple[np.ndarray, np.ndarray]:
  """Returns (int64 labels, float64 scores) after checking their shapes agree and the labels index the columns."""
  labels_N = np.asarray(labels_N)
  scores_NC = np.asarray(probabilities_NC, np.float64)
  if labels_N.ndim != 1 or scores_NC.ndim != 2 or len(labels_N) != len(scores_NC):
    raise ValueError(f'labels_N must be 1-D and {name} 2-D with as many rows, got shapes '
                     f'{labels_N.shape} and {scores_NC.shape}')
  if len(labels_N) == 0:
    raise ValueError('labels_N is empty: there is nothing to measure')
  if not np.issubdtype(labels_N.dtype, np.integer) or labels_N.min() < 0 or labels_N.max() >= scores_NC.shape[1]:
    raise ValueError(f'labels_N must be integers in [0, {scores_NC.shape[1]}) (the columns of {name})')
  if not np.all(np.isfinite(scores_NC)):
    raise ValueError(f'{name} holds NaN or inf values')
  return labels_N.astype(np.int64), scores_NC


def _check_confidence(confidence: float) -> float:
  """Returns the two-sided normal quantile z of a confidence level in (0, 1)."""
  if not 0.0 < confidence < 1.0:
    raise ValueError(f'confidence must be in (0, 1), got {confidence!r}')
  return statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
  """Returns the Wilson score interval of a binomial proportion successes / n; (0, 1) when n is 0."""
  if n < 0 or not 0 <= successes <= n:
    raise ValueError(f'wilson_interval needs 0 <= successes <= n, got successes={successes}, n={n}')
  z = _check_confidence(confidence)
  if n == 0:
    return 0.0, 1.0
  p = successes / n
  scale = 1.0 + z * z / n
  centre = (p + z * z / (2 * n)) / scale
  half = z / scale * np.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n))
  return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _mann_whitney_auc(scores_N: np.ndarray, positive_N: np.ndarray, weights_BN: np.ndarray) -> np.ndarray:
  """Returns, per row of image weights, P(positive scores above negative) + P(tie) / 2; NaN without both sides.

  This is the Mann-Whitney U statistic over (positive, negative) pairs, each image counted `weight`
  times, computed from counts per distinct score (tied scores count one half), never pair by pair.
  """
  values_U, inverse_N = np.unique(scores_N, return_inverse=True)
  num_rows, num_values = weights_BN.shape[0], len(values_U)
  bins_BN = np.arange(num_rows)[:, None] * num_values + inverse_N.reshape(1, -1)

  def per_value(weights: np.ndarray) -> np.ndarray:
    counts = np.bincount(bins_BN.ravel(), weights=weights.ravel(), minlength=num_rows * num_values)
    return counts.reshape(num_rows, num_values)

  positives_BU = per_value(weights_BN * positive_N)
  negatives_BU = per_value(weights_BN * ~positive_N)
  below_BU = np.cumsum(negatives_BU, axis=1) - negatives_BU
  wins_B = np.sum(positives_BU * (below_BU + 0.5 * negatives_BU), axis=1)
  pairs_B = positives_BU.sum(axis=1) * negatives_BU.sum(axis=1)
  return np.divide(wins_B, pairs_B, out=np.full(num_rows, np.nan), where=pairs_B > 0)


def roc_auc(labels_N: np.ndarray, probabilities_NC: np.ndarray, num_classes: int) -> dict[str, Any]:
  """Returns one-vs-rest ROC AUC per class index (None without positives or negatives) and their macro mean."""
  labels_N, scores_NC = _checked(labels_N, probabilities_NC)
  if scores_NC.shape[1] != num_classes:
    raise ValueError(f'probabilities_NC has {scores_NC.shape[1]} columns but num_classes is {num_classes}')
  ones_1N = np.ones((1, len(labels_N)))
  per_class = [float(_mann_whitney_auc(scores_NC[:, c], labels_N == c, ones_1N)[0]) for c in range(num_classes)]
  per_class = [None if np.isnan(auc) else auc for auc in per_class]
  defined = [auc for auc in per_class if auc is not None]
  return {'per_class': per_class, 'macro': float(np.mean(defined)) if defined else None}


def roc_curve(labels_binary_N: np.ndarray, scores_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Returns (fpr, tpr) from (0, 0) to (1, 1), one point per distinct score threshold, highest first."""
  labels_binary_N = np.asarray(labels_binary_N)
  scores_N = np.asarray(scores_N, np.float64)
  if labels_binary_N.shape != scores_N.shape or labels_binary_N.ndim != 1:
    raise ValueError(f'labels_binary_N and scores_N must be 1-D of one length, got shapes '
                     f'{labels_binary_N.shape} and {scores_N.shape}')
  if not np.all(np.isin(labels_binary_N, (0, 1))):
    raise ValueError('labels_binary_N must hold only 0 / 1 (or False / True)')
  positive_N = labels_binary_N.astype(bool)
  num_positive, num_negative = int(positive_N.sum()), int((~positive_N).sum())
  if num_positive == 0 or num_negative == 0:
    raise ValueError(f'a ROC curve needs positives and negatives in labels_binary_N, got {num_positive} '
                     f'and {num_negative}')
  order = np.argsort(-scores_N, kind='stable')
  sorted_scores = scores_N[order]
  true_positives = np.cumsum(positive_N[order])
  false_positives = np.cumsum(~positive_N[order])
  last_of_each_score = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores_N) - 1]
  fpr = np.r_[0.0, false_positives[last_of_each_score] / num_negative]
  tpr = np.r_[0.0, true_positives[last_of_each_score] / num_positive]
  return fpr, tpr


def stratified_bootstrap_indices(labels_N: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
  """Returns n_bootstrap x N image indices; each row redraws every class's images, with replacement, in place.

  Position i of every row holds an image of class labels_N[i], so every resample keeps each class's support.
  """
  labels_N = np.asarray(labels_N, np.int64)
  if n_bootstrap < 1:
    raise ValueError(f'n_bootstrap must be at least 1, got {n_bootstrap}')
  rng = np.random.default_rng(seed)
  indices_BN = np.empty((n_bootstrap, len(labels_N)), np.int64)
  for label in np.unique(labels_N):
    members = np.flatnonzero(labels_N == label)
    indices_BN[:, members] = members[rng.integers(0, len(members), size=(n_bootstrap, len(members)))]
  return indices_BN


def resampled_metrics(labels_N: np.ndarray, probabilities_NC: np.ndarray, indices_BN: np.ndarray
                      ) -> dict[str, np.ndarray]:
  """Returns the metrics of every resample (a row of indices_BN) at once, as arrays over resamples.

  Keys: accuracy, macro_/weighted_ precision / recall / f1 and macro_roc_auc (shape B); precision,
  recall, f1 and roc_auc (B x C). Macro averages run over each resample's classes with support, as in
  classification_metrics; an undefined AUC is NaN.
  """
  labels_N, scores_NC = _checked(labels_N, probabilities_NC)
  indices_BN = np.asarray(indices_BN, np.int64)
  num_resamples, num_images = indices_BN.shape
  num_classes = scores_NC.shape[1]
  labels_BN = labels_N[indices_BN]
  predictions_BN = scores_NC.argmax(axis=-1)[indices_BN]
  cells_BN = (np.arange(num_resamples)[:, None] * num_classes + labels_BN) * num_classes + predictions_BN
  counts_BCC = np.bincount(cells_BN.ravel(), minlength=num_resamples * num_classes * num_classes).reshape(
      num_resamples, num_classes, num_classes)
  true_positives_BC = np.diagonal(counts_BCC, axis1=1, axis2=2).astype(np.float64)
  support_BC = counts_BCC.sum(axis=2).astype(np.float64)
  precision_BC = _ratio(true_positives_BC, counts_BCC.sum(axis=1))
  recall_BC = _ratio(true_positives_BC, support_BC)
  f1_BC = _ratio(2 * precision_BC * recall_BC, precision_BC + recall_BC)
  present_BC = (support_BC > 0).astype(np.float64)
  result = {'accuracy': true_positives_BC.sum(axis=1) / num_images,
            'precision': precision_BC, 'recall': recall_BC, 'f1': f1_BC}
  for name, values_BC in (('precision', precision_BC), ('recall', recall_BC), ('f1', f1_BC)):
    result[f'macro_{name}'] = _ratio((values_BC * present_BC).sum(axis=1), present_BC.sum(axis=1))
    result[f'weighted_{name}'] = _ratio((values_BC * support_BC).sum(axis=1), support_BC.sum(axis=1))
  all_rows = np.arange(num_resamples)[:, None] * len(labels_N) + indices_BN
  weights_BN = np.bincount(all_rows.ravel(), minlength=num_resamples * len(labels_N)).reshape(num_resamples, -1)
  roc_auc_BC = np.stack([_mann_whitney_auc(scores_NC[:, c], labels_N == c, weights_BN)
                         for c in range(num_classes)], axis=1)
  result['roc_auc'] = roc_auc_BC
  defined_BC = ~np.isnan(roc_auc_BC)
  result['macro_roc_auc'] = np.divide(np.where(defined_BC, roc_auc_BC, 0.0).sum(axis=1), defined_BC.sum(axis=1),
                                      out=np.full(num_resamples, np.nan), where=defined_BC.any(axis=1))
  return result


def bootstrap_intervals(labels_N: np.ndarray, probabilities_NC: np.ndarray, classes: Sequence[str],
                        n_bootstrap: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
  """Returns stratified-bootstrap percentile intervals [lo, hi], nested like classification_metrics."""
  _check_confidence(confidence)
  labels_N, scores_NC = _checked(labels_N, probabilities_NC)
  if scores_NC.shape[1] != len(classes):
    raise ValueError(f'probabilities_NC has {scores_NC.shape[1]} columns for {len(classes)} classes {list(classes)}')
  samples = resampled_metrics(labels_N, scores_NC, stratified_bootstrap_indices(labels_N, n_bootstrap, seed))
  tails = ((1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0)

  def interval(values_B: np.ndarray) -> list[float] | None:
    if np.all(np.isnan(values_B)):
      return None
    return [float(v) for v in np.quantile(values_B, tails)]

  def averaged(prefix: str) -> dict[str, list[float] | None]:
    return {name: interval(samples[f'{prefix}_{name}']) for name in ('precision', 'recall', 'f1')}

  return {
      'accuracy': interval(samples['accuracy']),
      'macro_avg': averaged('macro'),
      'weighted_avg': averaged('weighted'),
      'per_class': {name: {metric: interval(samples[metric][:, c]) for metric in ('precision', 'recall', 'f1')}
                    for c, name in enumerate(classes)},
      'roc_auc': {'per_class': {name: interval(samples['roc_auc'][:, c]) for c, name in enumerate(classes)},
                  'macro': interval(samples['macro_roc_auc'])},
      'confidence': confidence, 'n_bootstrap': int(n_bootstrap), 'seed': int(seed),
  }


def reliability_bins(labels_N: np.ndarray, probabilities_NC: np.ndarray, n_bins: int = ECE_BINS
                     ) -> dict[str, np.ndarray]:
  """Returns top-label confidence bins (lo, hi] of equal width: edges, counts, accuracy and mean confidence.

  accuracy and confidence are NaN in empty bins; a confidence of 0 falls in the first bin.
  """
  labels_N, scores_NC = _checked(labels_N, probabilities_NC)
  if n_bins < 1:
    raise ValueError(f'n_bins must be at least 1, got {n_bins}')
  confidence_N = scores_NC.max(axis=-1)
  correct_N = (scores_NC.argmax(axis=-1) == labels_N).astype(np.float64)
  edges = np.linspace(0.0, 1.0, n_bins + 1)
  bin_N = np.clip(np.searchsorted(edges, confidence_N, side='left') - 1, 0, n_bins - 1)
  counts = np.bincount(bin_N, minlength=n_bins)

  def mean_per_bin(values_N: np.ndarray) -> np.ndarray:
    sums = np.bincount(bin_N, weights=values_N, minlength=n_bins)
    return np.divide(sums, counts, out=np.full(n_bins, np.nan), where=counts > 0)

  return {'edges': edges, 'counts': counts, 'accuracy': mean_per_bin(correct_N),
          'confidence': mean_per_bin(confidence_N)}


def expected_calibration_error(labels_N: np.ndarray, probabilities_NC: np.ndarray, n_bins: int = ECE_BINS) -> float:
  """Returns the top-label ECE: sum over equal-width bins of (bin share) * |accuracy - mean confidence|."""
  bins = reliability_bins(labels_N, probabilities_NC, n_bins)
  filled = bins['counts'] > 0
  gaps = np.abs(bins['accuracy'][filled] - bins['confidence'][filled])
  return float(np.sum(bins['counts'][filled] * gaps) / bins['counts'].sum())


def apply_temperature(logits_NC: np.ndarray, temperature: float) -> np.ndarray:
  """Returns softmax(logits_NC / temperature) in float64."""
  if not temperature > 0 or not np.isfinite(temperature):
    raise ValueError(f'temperature must be a finite number > 0, got {temperature!r}')
  scaled_NC = np.asarray(logits_NC, np.float64) / temperature
  exponentials_NC = np.exp(scaled_NC - scaled_NC.max(axis=-1, keepdims=True))
  return exponentials_NC / exponentials_NC.sum(axis=-1, keepdims=True)


def _temperature_nll(labels_N: np.ndarray, logits_NC: np.ndarray, log_temperature: float) -> float:
  """Mean negative log-likelihood of the labels under softmax(logits / exp(log_temperature))."""
  scaled_NC = logits_NC / np.exp(log_temperature)
  top_N = scaled_NC.max(axis=-1)
  log_partition_N = top_N + np.log(np.exp(scaled_NC - top_N[:, None]).sum(axis=-1))
  return float(np.mean(log_partition_N - scaled_NC[np.arange(len(labels_N)), labels_N]))


def fit_temperature(labels_N: np.ndarray, logits_NC: np.ndarray) -> float:
  """Returns the T in [0.01, 100] that minimises the NLL of softmax(logits_NC / T) (log-probabilities work too).

  The NLL is convex in 1/T, so it has one minimum in log T: a coarse grid brackets it, golden section
  refines it to about 1e-6 relative.
  """
  labels_N, logits_NC = _checked(labels_N, logits_NC, name='logits_NC')
  nll = functools.partial(_temperature_nll, labels_N, logits_NC)
  grid = np.linspace(*_LOG_TEMPERATURE_RANGE, 81)
  best = int(np.argmin([nll(t) for t in grid]))
  lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
  left, right = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
  nll_left, nll_right = nll(left), nll(right)
  while hi - lo > 1e-6:
    if nll_left <= nll_right:
      hi, right, nll_right = right, left, nll_left
      left = hi - _GOLDEN * (hi - lo)
      nll_left = nll(left)
    else:
      lo, left, nll_left = left, right, nll_right
      right = lo + _GOLDEN * (hi - lo)
      nll_right = nll(right)
  return float(np.exp((lo + hi) / 2.0))


def with_uncertainty(metrics: dict[str, Any], labels_N: np.ndarray, probabilities_NC: np.ndarray,
                     n_bootstrap: int = 2000, seed: int = 0) -> dict[str, Any]:
  """Returns a copy of classification_metrics' dict plus `intervals`, `roc_auc` and `calibration`.

  intervals mirrors the point values: accuracy gets {'wilson': [lo, hi], 'bootstrap': [lo, hi]}, every other
  metric the stratified bootstrap's [lo, hi] (95%); roc_auc and calibration hold point values.
  """
  labels_N, scores_NC = _checked(labels_N, probabilities_NC)
  classes = list(metrics['classes'])
  if scores_NC.shape[1] != len(classes):
    raise ValueError(f'probabilities_NC has {scores_NC.shape[1]} columns for metrics["classes"] {classes}')
  if confusion_matrix(labels_N, scores_NC.argmax(axis=-1), len(classes)).tolist() != metrics['confusion_matrix']:
    raise ValueError('metrics["confusion_matrix"] does not match labels_N and probabilities_NC: '
                     'pass the labels and probabilities the metrics were computed from')
  intervals = bootstrap_intervals(labels_N, scores_NC, classes, n_bootstrap=n_bootstrap, seed=seed)
  correct = int(np.trace(np.asarray(metrics['confusion_matrix'])))
  intervals['accuracy'] = {'wilson': list(wilson_interval(correct, len(labels_N))),
                           'bootstrap': intervals['accuracy']}
  auc = roc_auc(labels_N, scores_NC, len(classes))
  return {**metrics, 'intervals': intervals,
          'roc_auc': {'per_class': dict(zip(classes, auc['per_class'])), 'macro': auc['macro']},
          'calibration': {'ece': expected_calibration_error(labels_N, scores_NC, ECE_BINS), 'n_bins': ECE_BINS}}
