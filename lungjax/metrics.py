"""Pure functions over (labels, probabilities): confusion matrix, per-class and averaged P/R/F1, accuracy."""

from __future__ import annotations

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
