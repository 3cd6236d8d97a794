"""Pure functions over (labels, probabilities): P/R/F1, accuracy, clinical rates, ROC / PR AUC, MCC, Brier,
log loss, calibration, and their uncertainty."""

from __future__ import annotations

import copy
import functools
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.optimize
import scipy.stats


def confusion_matrix(labels_N: np.ndarray, predictions_N: np.ndarray, num_classes: int) -> np.ndarray:
  """Returns counts[true, predicted] as a num_classes x num_classes int64 array."""
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (np.asarray(labels_N, np.int64), np.asarray(predictions_N, np.int64)), 1)
  return counts


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  """Elementwise numerator / denominator, 0 where the denominator is 0 (sklearn's zero_division=0)."""
  return np.divide(numerator, denominator, out=np.zeros(numerator.shape, np.float64), where=denominator > 0)


def _one_vs_rest_counts(counts_XCC: np.ndarray) -> tuple[np.ndarray, ...]:
  """Returns (tp, fp, fn, tn) per class from counts[..., true, predicted], each shaped counts_XCC less one axis."""
  counts_XCC = np.asarray(counts_XCC, np.float64)
  true_positives = np.diagonal(counts_XCC, axis1=-2, axis2=-1)
  false_positives = counts_XCC.sum(axis=-2) - true_positives
  false_negatives = counts_XCC.sum(axis=-1) - true_positives
  total = counts_XCC.sum(axis=(-2, -1))[..., None]
  return true_positives, false_positives, false_negatives, total - true_positives - false_positives - false_negatives


def _matthews(counts_XCC: np.ndarray) -> np.ndarray:
  """Returns the multiclass Matthews correlation of each confusion matrix (sklearn's matthews_corrcoef); NaN where
  it is undefined (every true label, or every prediction, in one class), where sklearn returns 0."""
  counts_XCC = np.asarray(counts_XCC, np.float64)
  true_XC, predicted_XC = counts_XCC.sum(axis=-1), counts_XCC.sum(axis=-2)
  correct_X = np.trace(counts_XCC, axis1=-2, axis2=-1)
  total_X = counts_XCC.sum(axis=(-2, -1))
  covariance_X = correct_X * total_X - np.sum(true_XC * predicted_XC, axis=-1)
  scale_X = np.sqrt((total_X ** 2 - np.sum(predicted_XC ** 2, axis=-1))
                    * (total_X ** 2 - np.sum(true_XC ** 2, axis=-1)))
  return np.divide(covariance_X, scale_X, out=np.full(np.shape(covariance_X), np.nan), where=scale_X > 0)


# log_loss clips each probability to [eps, 1 - eps], eps float64's machine epsilon, as sklearn's log_loss does.
LOG_LOSS_EPS = float(np.finfo(np.float64).eps)


def _per_image_scores(labels_N: np.ndarray, probabilities_NC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Returns each image's Brier term, sum over classes of (p - one_hot)^2 in [0, 2], and its log loss term,
  -log(clip(p_true, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS))."""
  probabilities_NC = np.asarray(probabilities_NC, np.float64)
  one_hot_NC = np.eye(probabilities_NC.shape[1])[labels_N]
  brier_N = np.sum((probabilities_NC - one_hot_NC) ** 2, axis=-1)
  true_N = probabilities_NC[np.arange(len(labels_N)), labels_N]
  return brier_N, -np.log(np.clip(true_N, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS))


def classification_metrics(
    labels_N: np.ndarray, probabilities_NC: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
  """Returns accuracy, per-class and macro/weighted precision, recall, F1, the clinical rates, and probability scores.

  The macro average runs over the classes present in `labels_N` (support > 0), so a folder that holds
  only some of the classes is not penalised for the absent ones; `macro_avg_classes` names them.

  Per class (one class vs the rest, from the argmax predictions): sensitivity (= recall), specificity
  TN / (TN + FP), PPV (= precision), NPV TN / (TN + FN); and pr_auc, the average precision of the class's
  probability (sklearn's average_precision_score), None without positives or negatives (sklearn gives 1.0
  for a class that is every image). Undefined scores are None (JSON null), each with its reason in
  `null_reasons` ({'per_class.<class>.<key>' or 'mcc': why}): recall, F1 and sensitivity of a class without
  images, specificity of a class that is every image, NPV of a class every image is predicted as, and an
  undefined MCC (sklearn returns 0 for these). Precision (PPV) of a class never predicted stays 0
  (sklearn's zero_division=0), as in the macro and weighted averages, which average the defined values.
  Overall: mcc, the multiclass Matthews correlation (sklearn's matthews_corrcoef); brier, the multiclass Brier score,
  mean over images of the sum over classes of (p - one_hot)^2 (0 best, 2 worst; not divided by the number
  of classes); log_loss, sklearn's log_loss, probabilities clipped to [LOG_LOSS_EPS, 1 - LOG_LOSS_EPS].
  brier, log_loss and every pr_auc are None for no images.
  """
  labels_N = np.asarray(labels_N, np.int64)
  probabilities_NC = np.asarray(probabilities_NC, np.float64)
  predictions_N = probabilities_NC.argmax(axis=-1)
  counts = confusion_matrix(labels_N, predictions_N, len(classes))
  true_positives, false_positives, false_negatives, true_negatives = _one_vs_rest_counts(counts)
  support = counts.sum(axis=1)
  precision = _ratio(true_positives, counts.sum(axis=0))
  recall = _ratio(true_positives, support)
  f1 = _ratio(2 * precision * recall, precision + recall)
  specificity = _ratio(true_negatives, true_negatives + false_positives)
  npv = _ratio(true_negatives, true_negatives + false_negatives)
  present = support > 0
  if len(labels_N):
    weights_1N = np.ones((1, len(labels_N)))
    pr_auc = [float(_average_precision(probabilities_NC[:, c], labels_N == c, weights_1N)[0])
              for c in range(len(classes))]
    brier_N, log_loss_N = _per_image_scores(labels_N, probabilities_NC)
    brier, log_loss = float(brier_N.mean()), float(log_loss_N.mean())
  else:
    pr_auc, brier, log_loss = [np.nan] * len(classes), None, None
  mcc = float(_matthews(counts))

  def average(weights: np.ndarray) -> dict[str, float]:
    return {name: float(np.average(values, weights=weights)) if weights.sum() else 0.0
            for name, values in (('precision', precision), ('recall', recall), ('f1', f1))}

  # Undefined scores are None (JSON null) with the reason, never a 0.0 a reader could take for a measured zero.
  reasons: dict[str, str] = {}
  has_negatives = (true_negatives + false_positives) > 0
  predicted_negative = (true_negatives + false_negatives) > 0
  for c, name in enumerate(classes):
    if not present[c]:
      reasons.update({f'per_class.{name}.{key}': f'no {name} image: undefined without images of the class'
                      for key in ('recall', 'f1', 'sensitivity')})
    if not has_negatives[c]:
      reasons[f'per_class.{name}.specificity'] = f'every image is {name}: undefined without negatives'
    if not predicted_negative[c]:
      reasons[f'per_class.{name}.npv'] = f'every image is predicted {name}: undefined without negative predictions'
  if np.isnan(mcc):
    reasons['mcc'] = ('undefined: every true label, or every prediction, is one class'
                      if len(labels_N) else 'undefined without images')

  def defined(key: str, value: float) -> float | None:
    return None if key in reasons else float(value)

  return {
      'accuracy': float(true_positives.sum() / max(len(labels_N), 1)),
      'macro_avg': average(present.astype(np.float64)),
      'weighted_avg': average(support.astype(np.float64)),
      'per_class': {name: {'precision': float(precision[c]),
                           'recall': defined(f'per_class.{name}.recall', recall[c]),
                           'f1': defined(f'per_class.{name}.f1', f1[c]), 'support': int(support[c]),
                           'sensitivity': defined(f'per_class.{name}.sensitivity', recall[c]),
                           'specificity': defined(f'per_class.{name}.specificity', specificity[c]),
                           'ppv': float(precision[c]), 'npv': defined(f'per_class.{name}.npv', npv[c]),
                           'pr_auc': None if np.isnan(pr_auc[c]) else pr_auc[c]}
                    for c, name in enumerate(classes)},
      'mcc': defined('mcc', mcc),
      'null_reasons': reasons,
      'brier': brier,
      'log_loss': log_loss,
      'confusion_matrix': counts.tolist(),
      'classes': list(classes),
      'macro_avg_classes': [name for c, name in enumerate(classes) if present[c]],
      'n_images': int(len(labels_N)),
  }


def mean_cross_entropy(labels_N: np.ndarray, probabilities_NC: np.ndarray) -> float:
  """Returns the unweighted mean cross-entropy of the true classes' probabilities."""
  true_probabilities = np.asarray(probabilities_NC, np.float64)[np.arange(len(labels_N)), labels_N]
  return float(-np.log(np.clip(true_probabilities, 1e-12, 1.0)).mean())


# --- Uncertainty: Wilson and stratified-bootstrap intervals, ROC AUC, calibration, temperature scaling. ---

ECE_BINS = 15
_LOG_TEMPERATURE_RANGE = (float(np.log(1e-2)), float(np.log(1e2)))


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


def _wilson(rate: float, n: float, confidence: float) -> tuple[float, float]:
  """Returns the Wilson score interval of a proportion `rate` observed in n trials; (0, 1) when n is 0.

  Whole counts (n and rate * n whole numbers) go through scipy.stats.binomtest; the formula
  here is for counts that are not (predictions of repeated images divided by the repeats, a bootstrap
  fallback's rate on an effective count), which binomtest cannot take.
  """
  if n == 0:
    return 0.0, 1.0
  successes = rate * n
  if n == round(n) and abs(successes - round(successes)) < 1e-9:
    successes, n = int(round(successes)), int(round(n))
    interval = scipy.stats.binomtest(successes, n).proportion_ci(confidence_level=confidence, method='wilson')
    # At 0 (or n) successes the bound is exactly 0 (or 1), the point value; clip rounding outside [0, 1].
    return (0.0 if successes == 0 else max(0.0, float(interval.low)),
            1.0 if successes == n else min(1.0, float(interval.high)))
  z = _check_confidence(confidence)
  scale = 1.0 + z * z / n
  centre = (rate + z * z / (2 * n)) / scale
  half = z / scale * np.sqrt(max(rate * (1.0 - rate), 0.0) / n + z * z / (4 * n * n))
  # At rate 0 (or 1) the bound is exactly 0 (or 1); rounding would leave it a hair inside, off the point value.
  return (0.0 if rate <= 0.0 else float(max(0.0, centre - half)),
          1.0 if rate >= 1.0 else float(min(1.0, centre + half)))


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
  """Returns the Wilson score interval of a binomial proportion successes / n; (0, 1) when n is 0.

  Whole counts: scipy.stats.binomtest(successes, n).proportion_ci(method='wilson'); others (counts of pooled
  predictions divided by the repeats) the same formula by hand.
  """
  if n < 0 or not 0 <= successes <= n:
    raise ValueError(f'wilson_interval needs 0 <= successes <= n, got successes={successes}, n={n}')
  _check_confidence(confidence)
  return _wilson(successes / n if n else 0.0, n, confidence)


def _counts_per_value(scores_N: np.ndarray, positive_N: np.ndarray, weights_BN: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Returns (positives_BU, negatives_BU): per row of image weights, the weighted count of positive and of
  negative images at each distinct score, the scores ascending."""
  values_U, inverse_N = np.unique(scores_N, return_inverse=True)
  num_rows, num_values = weights_BN.shape[0], len(values_U)
  bins_BN = np.arange(num_rows)[:, None] * num_values + inverse_N.reshape(1, -1)

  def per_value(weights: np.ndarray) -> np.ndarray:
    counts = np.bincount(bins_BN.ravel(), weights=weights.ravel(), minlength=num_rows * num_values)
    return counts.reshape(num_rows, num_values)

  return per_value(weights_BN * positive_N), per_value(weights_BN * ~positive_N)


def _mann_whitney_auc(scores_N: np.ndarray, positive_N: np.ndarray, weights_BN: np.ndarray,
                      counts: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
  """Returns, per row of image weights, P(positive scores above negative) + P(tie) / 2; NaN without both sides.

  This is the Mann-Whitney U statistic over (positive, negative) pairs, each image counted `weight`
  times, computed from counts per distinct score (tied scores count one half), never pair by pair.
  `counts` is _counts_per_value's result, when the caller has it already.
  """
  positives_BU, negatives_BU = counts or _counts_per_value(scores_N, positive_N, weights_BN)
  below_BU = np.cumsum(negatives_BU, axis=1) - negatives_BU
  wins_B = np.sum(positives_BU * (below_BU + 0.5 * negatives_BU), axis=1)
  pairs_B = positives_BU.sum(axis=1) * negatives_BU.sum(axis=1)
  return np.divide(wins_B, pairs_B, out=np.full(len(wins_B), np.nan), where=pairs_B > 0)


def _average_precision(scores_N: np.ndarray, positive_N: np.ndarray, weights_BN: np.ndarray,
                       counts: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
  """Returns, per row of image weights, the average precision; NaN without both positives and negatives.

  As sklearn's average_precision_score: sum over thresholds (each distinct score, highest first) of the
  recall gained times the precision there, no interpolation; tied scores enter together.
  """
  positives_BU, negatives_BU = counts or _counts_per_value(scores_N, positive_N, weights_BN)
  positives_BU, negatives_BU = positives_BU[:, ::-1], negatives_BU[:, ::-1]  # Highest score first.
  true_positives_BU = np.cumsum(positives_BU, axis=1)
  called_BU = true_positives_BU + np.cumsum(negatives_BU, axis=1)
  gained_B = np.sum(positives_BU * _ratio(true_positives_BU, called_BU), axis=1)
  num_positive_B, num_negative_B = true_positives_BU[:, -1], called_BU[:, -1] - true_positives_BU[:, -1]
  return np.divide(gained_B, num_positive_B, out=np.full(len(gained_B), np.nan),
                   where=(num_positive_B > 0) & (num_negative_B > 0))


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


def pr_curve(labels_binary_N: np.ndarray, scores_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Returns (recall, precision), one point per distinct score threshold, highest first, after a first point at
  recall 0 with the precision of the highest threshold (sklearn's precision_recall_curve, reversed, puts 1 there).

  Drawn as a step (recall gained at each point times its precision), its area is the average precision that
  classification_metrics reports as pr_auc. Needs positives and negatives, as roc_curve does.
  """
  fpr, tpr = roc_curve(labels_binary_N, scores_N)  # Validates; cumulative rates at each distinct threshold.
  positive_N = np.asarray(labels_binary_N).astype(bool)
  true_positives = tpr[1:] * positive_N.sum()
  called = true_positives + fpr[1:] * (~positive_N).sum()
  precision = true_positives / called
  return np.r_[0.0, tpr[1:]], np.r_[precision[0], precision]


def stratified_bootstrap_indices(labels_N: np.ndarray, n_bootstrap: int, seed: int, repeats: int = 1) -> np.ndarray:
  """Returns n_bootstrap x N image indices; each row redraws every class's images, with replacement, in place.

  Position i of every row holds an image of class labels_N[i], so every resample keeps each class's support.
  With repeats R > 1 the N rows are R predictions of the same N / R images (row r * N / R + i is image i's r-th
  prediction, e.g. R seeds' runs on one validation split): images are drawn, and each brings all R of its rows.
  """
  labels_N = np.asarray(labels_N, np.int64)
  if n_bootstrap < 1:
    raise ValueError(f'n_bootstrap must be at least 1, got {n_bootstrap}')
  labels_G = _repeated_images(labels_N, repeats)
  rng = np.random.default_rng(seed)
  indices_BG = np.empty((n_bootstrap, len(labels_G)), np.int64)
  for label in np.unique(labels_G):
    members = np.flatnonzero(labels_G == label)
    indices_BG[:, members] = members[rng.integers(0, len(members), size=(n_bootstrap, len(members)))]
  return np.concatenate([indices_BG + r * len(labels_G) for r in range(repeats)], axis=1)


def _repeated_images(labels_N: np.ndarray, repeats: int) -> np.ndarray:
  """The labels of the distinct images when labels_N holds `repeats` predictions of each (see above)."""
  if repeats < 1 or len(labels_N) % repeats:
    raise ValueError(f'repeats={repeats} must be >= 1 and divide the {len(labels_N)} predictions')
  labels_G = labels_N[:len(labels_N) // repeats]
  if not np.array_equal(np.tile(labels_G, repeats), labels_N):
    raise ValueError(f'with repeats={repeats} every block of {len(labels_G)} rows must hold the same images '
                     '(the same labels in the same order)')
  return labels_G


def resampled_metrics(labels_N: np.ndarray, probabilities_NC: np.ndarray, indices_BN: np.ndarray
                      ) -> dict[str, np.ndarray]:
  """Returns the metrics of every resample (a row of indices_BN) at once, as arrays over resamples.

  Keys: accuracy, macro_/weighted_ precision / recall / f1, macro_roc_auc, mcc, brier and log_loss (shape
  B); precision, recall, f1, roc_auc and pr_auc (B x C). Macro averages run over each resample's classes
  with support, as in classification_metrics; an undefined AUC, PR AUC or MCC is NaN.
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
            'precision': precision_BC, 'recall': recall_BC, 'f1': f1_BC, 'mcc': _matthews(counts_BCC)}
  for name, values_BC in (('precision', precision_BC), ('recall', recall_BC), ('f1', f1_BC)):
    result[f'macro_{name}'] = _ratio((values_BC * present_BC).sum(axis=1), present_BC.sum(axis=1))
    result[f'weighted_{name}'] = _ratio((values_BC * support_BC).sum(axis=1), support_BC.sum(axis=1))
  all_rows = np.arange(num_resamples)[:, None] * len(labels_N) + indices_BN
  weights_BN = np.bincount(all_rows.ravel(), minlength=num_resamples * len(labels_N)).reshape(num_resamples, -1)
  roc_auc_BC, pr_auc_BC = np.empty((num_resamples, num_classes)), np.empty((num_resamples, num_classes))
  for c in range(num_classes):
    counts = _counts_per_value(scores_NC[:, c], labels_N == c, weights_BN)
    roc_auc_BC[:, c] = _mann_whitney_auc(scores_NC[:, c], labels_N == c, weights_BN, counts)
    pr_auc_BC[:, c] = _average_precision(scores_NC[:, c], labels_N == c, weights_BN, counts)
  result['roc_auc'], result['pr_auc'] = roc_auc_BC, pr_auc_BC
  defined_BC = ~np.isnan(roc_auc_BC)
  result['macro_roc_auc'] = np.divide(np.where(defined_BC, roc_auc_BC, 0.0).sum(axis=1), defined_BC.sum(axis=1),
                                      out=np.full(num_resamples, np.nan), where=defined_BC.any(axis=1))
  brier_N, log_loss_N = _per_image_scores(labels_N, scores_NC)
  result['brier'] = weights_BN @ brier_N / num_images
  result['log_loss'] = weights_BN @ log_loss_N / num_images
  return result


# Where every resample gives one value, the percentile bootstrap's interval has zero width although other
# images could score otherwise; such an interval is replaced by the Wilson interval of the value, read on the
# metric's range (low, high) as a proportion of n_eff trials (see bootstrap_intervals).
_RANGES = {'mcc': (-1.0, 1.0), 'brier': (0.0, 2.0), 'log_loss': (0.0, float(-np.log(LOG_LOSS_EPS)))}


def bootstrap_intervals(labels_N: np.ndarray, probabilities_NC: np.ndarray, classes: Sequence[str],
                        n_bootstrap: int = 2000, seed: int = 0, confidence: float = 0.95,
                        repeats: int = 1) -> dict[str, Any]:
  """Returns stratified-bootstrap percentile intervals [lo, hi] of the metrics that are not single proportions.

  Nested like classification_metrics: accuracy; macro_avg and weighted_avg precision / recall / f1;
  per_class.<class>.{f1, pr_auc}; roc_auc.{per_class.<class>, macro}; mcc; brier; log_loss. None where the
  metric is undefined in every resample (an AUC of a class absent from the folder, the MCC of one class).

  Never a zero-width interval where other images could score otherwise: where every resample gives one
  value v (it happens at a boundary, a perfect AUC or F1, a class all right or all wrong, probabilities all
  one-hot), the interval is the Wilson score interval of v, rescaled from the metric's range to [0, 1], as
  a proportion of n_eff trials: for accuracy and the weighted averages, brier and log_loss (means over
  images of a bounded term, for which the binomial is the widest case) n_eff is the number of images;
  for a class's f1 its support; for a class's ROC / PR AUC the smaller of its positives and negatives (as
  many disjoint (positive, negative) pairs, each an independent trial of P(positive ranked above)); for
  the macro averages, the macro ROC AUC and the MCC, the smallest such count among the classes (the
  smallest class dominates their variance). For the ROC AUC this is a valid bound; for PR AUC and MCC it
  is a heuristic widening. `degenerate` lists the key paths that were replaced so.

  repeats R > 1: the rows are R predictions of the same images (stratified_bootstrap_indices); images are
  resampled with all their rows, and every count above is of distinct images (divided by R).
  """
  z = _check_confidence(confidence)
  labels_N, scores_NC = _checked(labels_N, probabilities_NC)
  if scores_NC.shape[1] != len(classes):
    raise ValueError(f'probabilities_NC has {scores_NC.shape[1]} columns for {len(classes)} classes {list(classes)}')
  num_images = len(labels_N)
  samples = resampled_metrics(labels_N, scores_NC, stratified_bootstrap_indices(labels_N, n_bootstrap, seed, repeats))
  point = {key: values[0] for key, values in resampled_metrics(labels_N, scores_NC, np.arange(num_images)[None]
                                                               ).items()}
  tails = ((1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0)
  num_images //= repeats  # Distinct images: the counts behind the Wilson widening below.
  support_C = np.bincount(_repeated_images(labels_N, repeats), minlength=len(classes))
  pairs_C = np.minimum(support_C, num_images - support_C)  # Disjoint (positive, negative) pairs per class.
  smallest_class = int(support_C[support_C > 0].min())
  defined_pairs = pairs_C[~np.isnan(point['roc_auc'])]
  smallest_pairs = int(defined_pairs.min()) if len(defined_pairs) else 0
  degenerate = []

  def interval(keys: tuple[str, ...], values_B: np.ndarray, value: float, n_eff: int) -> list[float] | None:
    if np.all(np.isnan(values_B)):
      return None
    lo, hi = (float(v) for v in np.quantile(values_B, tails))
    if hi - lo > 1e-12:
      return [lo, hi]
    degenerate.append(list(keys))
    low, high = _RANGES.get(keys[0], (0.0, 1.0))
    lo, hi = _wilson(min(max((value - low) / (high - low), 0.0), 1.0), n_eff, confidence)
    return [low + lo * (high - low), low + hi * (high - low)]

  def averaged(prefix: str, average: str, n_eff: int) -> dict[str, list[float] | None]:
    return {name: interval((average, name), samples[f'{prefix}_{name}'], point[f'{prefix}_{name}'], n_eff)
            for name in ('precision', 'recall', 'f1')}

  per_class = {}
  for c, name in enumerate(classes):
    per_class[name] = {
        'f1': interval(('per_class', name, 'f1'), samples['f1'][:, c], point['f1'][c], int(support_C[c])),
        'pr_auc': interval(('per_class', name, 'pr_auc'), samples['pr_auc'][:, c], point['pr_auc'][c],
                           int(pairs_C[c]))}
  return {
      'accuracy': interval(('accuracy', 'bootstrap'), samples['accuracy'], point['accuracy'], num_images),
      'macro_avg': averaged('macro', 'macro_avg', smallest_class),
      'weighted_avg': averaged('weighted', 'weighted_avg', num_images),
      'per_class': per_class,
      'roc_auc': {'per_class': {name: interval(('roc_auc', 'per_class', name), samples['roc_auc'][:, c],
                                               point['roc_auc'][c], int(pairs_C[c]))
                                for c, name in enumerate(classes)},
                  'macro': interval(('roc_auc', 'macro'), samples['macro_roc_auc'], point['macro_roc_auc'],
                                    smallest_pairs)},
      'mcc': interval(('mcc',), samples['mcc'], point['mcc'], smallest_class),
      'brier': interval(('brier',), samples['brier'], point['brier'], num_images),
      'log_loss': interval(('log_loss',), samples['log_loss'], point['log_loss'], num_images),
      'degenerate': degenerate,
      'confidence': confidence, 'n_bootstrap': int(n_bootstrap), 'seed': int(seed),
  }


# How each interval in metric_intervals is made: Wilson from counts for proportions, the bootstrap otherwise.
INTERVAL_METHODS = {
    'accuracy': {'wilson': 'wilson', 'bootstrap': 'bootstrap'},
    'per_class': {'precision': 'wilson', 'recall': 'wilson', 'sensitivity': 'wilson', 'specificity': 'wilson',
                  'ppv': 'wilson', 'npv': 'wilson', 'f1': 'bootstrap', 'pr_auc': 'bootstrap'},
    'macro_avg': 'bootstrap', 'weighted_avg': 'bootstrap', 'roc_auc': 'bootstrap', 'mcc': 'bootstrap',
    'brier': 'bootstrap', 'log_loss': 'bootstrap',
}


def metric_intervals(labels_N: np.ndarray, probabilities_NC: np.ndarray, classes: Sequence[str],
                     n_bootstrap: int = 2000, seed: int = 0, confidence: float = 0.95,
                     repeats: int = 1) -> dict[str, Any]:
  """Returns the interval of every metric, nested like classification_metrics, and how each was made.

  Proportions get the Wilson score interval of their counts (one class vs the rest, argmax predictions):
  accuracy (correct of all images; accuracy also keeps its bootstrap interval: {'wilson', 'bootstrap'}),
  and per class precision = PPV (TP of TP + FP), recall = sensitivity (TP of TP + FN), specificity (TN of
  TN + FP) and NPV (TN of TN + FN); a Wilson interval is never of zero width, and is [0, 1] for a zero
  denominator. Everything else comes from bootstrap_intervals (stratified percentile bootstrap, widened
  where it is degenerate). `methods` is INTERVAL_METHODS plus `wilson_fallback`, the key paths where the
  bootstrap's zero-width interval was replaced by a Wilson interval (see bootstrap_intervals).

  repeats R > 1 (R predictions of each image, e.g. R seeds pooled): the bootstrap resamples images with all their
  rows, and a Wilson interval counts images, not predictions (its successes and trials divided by R).
  """
  z = _check_confidence(confidence)
  labels_N, scores_NC = _checked(labels_N, probabilities_NC)
  intervals = bootstrap_intervals(labels_N, scores_NC, classes, n_bootstrap=n_bootstrap, seed=seed,
                                  confidence=confidence, repeats=repeats)
  counts = confusion_matrix(labels_N, scores_NC.argmax(axis=-1), len(classes))
  true_positives, false_positives, false_negatives, true_negatives = _one_vs_rest_counts(counts)

  def wilson(successes: float, n: float) -> list[float]:
    return list(_wilson(successes / n if n else 0.0, float(n) / repeats, confidence))

  for c, name in enumerate(classes):
    tp, fp, fn, tn = true_positives[c], false_positives[c], false_negatives[c], true_negatives[c]
    ppv, sensitivity = wilson(tp, tp + fp), wilson(tp, tp + fn)
    intervals['per_class'][name] = {
        'precision': ppv, 'recall': sensitivity, 'f1': intervals['per_class'][name]['f1'],
        'sensitivity': sensitivity, 'specificity': wilson(tn, tn + fp), 'ppv': ppv, 'npv': wilson(tn, tn + fn),
        'pr_auc': intervals['per_class'][name]['pr_auc']}
  intervals['accuracy'] = {'wilson': wilson(float(np.trace(counts)), len(labels_N)),
                           'bootstrap': intervals['accuracy']}
  intervals['methods'] = {**copy.deepcopy(INTERVAL_METHODS), 'wilson_fallback': intervals.pop('degenerate')}
  return intervals


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

  The NLL is convex in 1/T, so it has one minimum in log T: a coarse grid brackets it, scipy's bounded Brent
  search (scipy.optimize.minimize_scalar) refines it to about 1e-8 in log T.
  """
  labels_N, logits_NC = _checked(labels_N, logits_NC, name='logits_NC')
  nll = functools.partial(_temperature_nll, labels_N, logits_NC)
  grid = np.linspace(*_LOG_TEMPERATURE_RANGE, 81)
  best = int(np.argmin([nll(t) for t in grid]))
  lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
  result = scipy.optimize.minimize_scalar(nll, bounds=(lo, hi), method='bounded', options={'xatol': 1e-8})
  if not result.success:
    raise RuntimeError(f'fit_temperature: the search in log T in [{lo:.4g}, {hi:.4g}] failed: {result.message}')
  return float(np.exp(result.x))


def with_uncertainty(metrics: dict[str, Any], labels_N: np.ndarray, probabilities_NC: np.ndarray,
                     n_bootstrap: int = 2000, seed: int = 0, repeats: int = 1) -> dict[str, Any]:
  """Returns a copy of classification_metrics' dict plus `intervals`, `roc_auc` and `calibration`.

  intervals is metric_intervals' (95%): nested like the point values, Wilson for the proportions (accuracy
  gets {'wilson': [lo, hi], 'bootstrap': [lo, hi]}), the stratified bootstrap for the rest, and `methods`
  saying which; roc_auc and calibration hold point values. repeats R > 1: the rows are R predictions of each
  image (metric_intervals), e.g. several seeds' runs on one validation split pooled.
  """
  labels_N, scores_NC = _checked(labels_N, probabilities_NC)
  classes = list(metrics['classes'])
  if scores_NC.shape[1] != len(classes):
    raise ValueError(f'probabilities_NC has {scores_NC.shape[1]} columns for metrics["classes"] {classes}')
  if confusion_matrix(labels_N, scores_NC.argmax(axis=-1), len(classes)).tolist() != metrics['confusion_matrix']:
    raise ValueError('metrics["confusion_matrix"] does not match labels_N and probabilities_NC: '
                     'pass the labels and probabilities the metrics were computed from')
  intervals = metric_intervals(labels_N, scores_NC, classes, n_bootstrap=n_bootstrap, seed=seed, repeats=repeats)
  intervals['repeats'] = repeats
  auc = roc_auc(labels_N, scores_NC, len(classes))
  return {**metrics, 'intervals': intervals,
          'roc_auc': {'per_class': dict(zip(classes, auc['per_class'])), 'macro': auc['macro']},
          'calibration': {'ece': expected_calibration_error(labels_N, scores_NC, ECE_BINS), 'n_bins': ECE_BINS}}


def recall_gap(labels_N: np.ndarray, predicted_N: np.ndarray, groups_N: Sequence[str], label: int,
               min_images: int, n_bootstrap: int = 2000, seed: int = 0, repeats: int = 1) -> dict[str, Any]:
  """The largest gap in one class's recall between subgroups, with a 95% bootstrap interval.

  Only subgroups holding at least `min_images` images of the class take part (the others are listed in
  'too_few'). The gap is the recall of the highest group minus that of the lowest (both named); its interval
  resamples the class's images within each of those two groups independently (percentile bootstrap of the
  difference). Picking the two extremes first makes the gap biased upwards: an interval that includes 0 says the
  groups are not told apart. Fewer than two groups taking part: 'gap' None and the reason.

  repeats R > 1: the rows are R predictions of each image in seed-major blocks (R seeds pooled); an image counts
  once, scored by the share of its R predictions that are right, and the bootstrap resamples images.
  """
  labels_N, predicted_N = np.asarray(labels_N, np.int64), np.asarray(predicted_N, np.int64)
  groups_N = np.asarray(groups_N, dtype=object)
  if repeats < 1 or len(labels_N) % repeats:
    raise ValueError(f'{len(labels_N)} rows are not {repeats} blocks of the same images')
  n = len(labels_N) // repeats
  right_N = (predicted_N == label).astype(np.float64).reshape(repeats, n).mean(axis=0)
  labels_N, groups_N = labels_N[:n], groups_N[:n]
  recalls, sizes, too_few, correct = {}, {}, [], {}
  for group in dict.fromkeys(groups_N.tolist()):
    rows = (groups_N == group) & (labels_N == label)
    count = int(rows.sum())
    if count >= min_images:
      correct[group] = right_N[rows]
      recalls[group], sizes[group] = float(np.mean(correct[group])), count
    elif count:
      too_few.append({'group': group, 'n_class_images': count})
  result: dict[str, Any] = {'min_images': int(min_images), 'n_class_images': sizes, 'recalls': recalls,
                            'too_few': too_few}
  if len(recalls) < 2:
    return {**result, 'gap': None, 'reason': f'fewer than two subgroups with {min_images} or more images of the class'}
  high = max(recalls, key=recalls.get)
  low = min(recalls, key=recalls.get)
  rng = np.random.default_rng(seed)
  samples = [rng.choice(correct[g], (n_bootstrap, len(correct[g]))).mean(axis=1) for g in (high, low)]
  lo, hi = np.quantile(samples[0] - samples[1], [(1.0 - 0.95) / 2.0, (1.0 + 0.95) / 2.0])
  return {**result, 'high': high, 'low': low, 'gap': recalls[high] - recalls[low], 'interval': [float(lo), float(hi)],
          'method': 'percentile bootstrap of the difference, the class\'s images resampled within each group',
          'n_bootstrap': int(n_bootstrap)}


# The headline numbers summarised over runs, as paths into metrics.json.
_HEADLINE = ([('accuracy',)] + [(avg, m) for avg in ('macro_avg', 'weighted_avg') for m in ('precision', 'recall', 'f1')]
             + [('roc_auc', 'macro'), ('mcc',), ('brier',), ('log_loss',)])
_PER_CLASS = ('precision', 'recall', 'f1', 'specificity', 'npv')


def _value(metrics: dict[str, Any], path: Sequence[str]) -> float:
  for key in path:
    metrics = metrics[key]
  return float(metrics)


def mean_and_std(per_run: Sequence[dict[str, Any]], classes: Sequence[str]) -> dict[str, dict[str, float]]:
  """Returns {metric name: {'mean', 'std', 'values'}} over runs (std with ddof=1; 0 for one run)."""
  paths = [(p, '.'.join(p)) for p in _HEADLINE]
  paths += [(('per_class', c, m), f'{c}.{m}') for c in classes for m in _PER_CLASS]
  summary = {}
  for path, name in paths:
    try:
      values = np.asarray([_value(m, path) for m in per_run])
    except (KeyError, TypeError):  # A metric that an older run's metrics.json lacks, or undefined (None) in a run.
      continue
    summary[name] = {'mean': float(values.mean()), 'std': float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                     'values': values.tolist()}
  return summary

