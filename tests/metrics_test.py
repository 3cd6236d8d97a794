"""Metrics against hand-computed values (the report files they become: report_markdown_test)."""

import json
import time

import numpy as np
import pytest

from lungjax import metrics

CLASSES = ('Covid', 'Normal', 'Viral Pneumonia')


def _one_hot(predictions):
  return np.eye(3)[predictions]


def test_classification_metrics_by_hand():
  labels = np.array([0, 0, 0, 1, 1, 2])
  predicted = np.array([0, 0, 1, 1, 2, 2])
  result = metrics.classification_metrics(labels, _one_hot(predicted), CLASSES)
  assert result['confusion_matrix'] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
  assert result['accuracy'] == 4 / 6
  covid, normal, viral = (result['per_class'][c] for c in CLASSES)
  assert (covid['precision'], covid['recall'], covid['support']) == (1.0, 2 / 3, 3)
  assert (normal['precision'], normal['recall']) == (0.5, 0.5)
  assert (viral['precision'], viral['recall']) == (0.5, 1.0)
  np.testing.assert_allclose(covid['f1'], 0.8)
  np.testing.assert_allclose(result['macro_avg']['recall'], (2 / 3 + 0.5 + 1.0) / 3)
  np.testing.assert_allclose(result['weighted_avg']['recall'], (3 * 2 / 3 + 2 * 0.5 + 1.0) / 6)


def test_clinical_rates_and_mcc_by_hand():
  # Confusion matrix (rows true, columns predicted), 20 images:
  #   Covid [5, 1, 0]   Covid: TP 5, FN 1, FP 2 (2 Normal predicted Covid), TN 20 - 8 = 12
  #   Normal [2, 6, 1]  Normal: TP 6, FN 3, FP 2, TN 9
  #   Viral [0, 1, 4]   Viral: TP 4, FN 1, FP 1, TN 14
  counts = [[5, 1, 0], [2, 6, 1], [0, 1, 4]]
  labels = np.repeat([0, 0, 0, 1, 1, 1, 2, 2, 2], np.ravel(counts))
  predicted = np.tile([0, 1, 2], 3).repeat(np.ravel(counts))
  result = metrics.classification_metrics(labels, _one_hot(predicted), CLASSES)
  assert result['confusion_matrix'] == counts
  expected = {'Covid': (5 / 6, 12 / 14, 5 / 7, 12 / 13), 'Normal': (6 / 9, 9 / 11, 6 / 8, 9 / 12),
              'Viral Pneumonia': (4 / 5, 14 / 15, 4 / 5, 14 / 15)}
  for name, rates in expected.items():
    row = result['per_class'][name]
    np.testing.assert_allclose([row[k] for k in ('sensitivity', 'specificity', 'ppv', 'npv')], rates, rtol=1e-12)
    assert (row['sensitivity'], row['ppv']) == (row['recall'], row['precision'])
  # MCC: true counts t = (6, 9, 5), predicted p = (7, 8, 5), 15 correct of 20:
  # (15 * 20 - t.p) / sqrt((20^2 - p.p) (20^2 - t.t)) = (300 - 139) / sqrt(262 * 258).
  np.testing.assert_allclose(result['mcc'], 161 / np.sqrt(262 * 258), rtol=1e-12)
  # Every clinical interval is the Wilson interval of its counts.
  intervals = metrics.metric_intervals(labels, _one_hot(predicted), CLASSES, n_bootstrap=50)['per_class']
  assert intervals['Covid']['specificity'] == list(metrics.wilson_interval(12, 14))
  assert intervals['Covid']['npv'] == list(metrics.wilson_interval(12, 13))
  assert intervals['Normal']['sensitivity'] == intervals['Normal']['recall'] == list(metrics.wilson_interval(6, 9))
  assert intervals['Normal']['ppv'] == intervals['Normal']['precision'] == list(metrics.wilson_interval(6, 8))
  assert intervals['Viral Pneumonia']['specificity'] == list(metrics.wilson_interval(14, 15))


def test_mcc_brier_log_loss_and_pr_auc_match_scikit_learn():
  from sklearn import metrics as sklearn_metrics  # pylint: disable=g-import-not-at-top  # The test extra's.
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 3, size=90)
  logits = np.round(rng.normal(size=(90, 3)) + 1.2 * np.eye(3)[labels], 1)  # Rounded: tied scores.
  probabilities = metrics.apply_temperature(logits, 1.0)
  probabilities[:3] = np.eye(3)[(labels[:3] + 1) % 3]  # Confidently wrong: log loss clips p = 0.
  probabilities[3:6] = np.eye(3)[labels[3:6]]  # Exactly right: p = 1 is clipped too.
  result = metrics.classification_metrics(labels, probabilities, CLASSES)
  np.testing.assert_allclose(result['mcc'], sklearn_metrics.matthews_corrcoef(labels, probabilities.argmax(1)),
                             rtol=1e-12)
  np.testing.assert_allclose(result['log_loss'], sklearn_metrics.log_loss(labels, probabilities), rtol=1e-12)
  np.testing.assert_allclose(result['brier'], np.mean(np.sum((probabilities - np.eye(3)[labels]) ** 2, axis=1)),
                             rtol=1e-12)
  for c, name in enumerate(CLASSES):
    np.testing.assert_allclose(result['per_class'][name]['pr_auc'],
                               sklearn_metrics.average_precision_score(labels == c, probabilities[:, c]), rtol=1e-12)
    for key, reference in (('sensitivity', sklearn_metrics.recall_score), ('ppv', sklearn_metrics.precision_score)):
      np.testing.assert_allclose(result['per_class'][name][key],
                                 reference(labels == c, probabilities.argmax(1) == c), rtol=1e-12)
    # Specificity is the recall of the negatives, NPV their precision.
    np.testing.assert_allclose(result['per_class'][name]['specificity'],
                               sklearn_metrics.recall_score(labels != c, probabilities.argmax(1) != c), rtol=1e-12)
    np.testing.assert_allclose(result['per_class'][name]['npv'],
                               sklearn_metrics.precision_score(labels != c, probabilities.argmax(1) != c), rtol=1e-12)
  # A class with no images has no PR AUC (sklearn would warn); MCC of one true class is undefined: None, with why
  # (sklearn returns 0, a number no reader can tell from a measured zero).
  two = metrics.classification_metrics(labels[labels < 2], probabilities[labels < 2], CLASSES)
  assert two['per_class']['Viral Pneumonia']['pr_auc'] is None and two['per_class']['Covid']['pr_auc'] is not None
  one = metrics.classification_metrics(labels[labels == 0], probabilities[labels == 0], CLASSES)
  assert sklearn_metrics.matthews_corrcoef(labels[labels == 0], probabilities[labels == 0].argmax(1)) == 0.0
  assert one['mcc'] is None and 'one class' in one['null_reasons']['mcc']
  assert result['null_reasons'] == {}


def test_undefined_scores_are_null_with_a_reason_not_zero():
  """metrics.json says null (and why) where the report says n/a: recall, F1 and sensitivity of an absent class,
  specificity of a class that is every image, NPV of a class every image is predicted as, an undefined MCC."""
  import json  # pylint: disable=g-import-not-at-top
  # Covid 2 (one predicted Normal), Normal 1, no Viral Pneumonia.
  result = metrics.classification_metrics(np.array([0, 0, 1]), _one_hot(np.array([0, 1, 1])), CLASSES)
  viral = result['per_class']['Viral Pneumonia']
  assert viral['recall'] is viral['f1'] is viral['sensitivity'] is None
  assert viral['specificity'] == 1.0 and viral['npv'] == 1.0 and viral['precision'] == 0.0  # These are defined.
  assert set(result['null_reasons']) == {f'per_class.Viral Pneumonia.{k}' for k in ('recall', 'f1', 'sensitivity')}
  assert all('no Viral Pneumonia image' in why for why in result['null_reasons'].values())
  assert result['per_class']['Normal']['recall'] == 1.0 and result['mcc'] is not None
  assert result['macro_avg']['recall'] == 0.75  # Over the classes present; the absent class's None is not a 0.
  # Every image Covid, every prediction Covid: Covid's specificity and NPV and the MCC have no denominator.
  alone = metrics.classification_metrics(np.array([0, 0]), _one_hot(np.array([0, 0])), CLASSES)
  covid = alone['per_class']['Covid']
  assert covid['recall'] == 1.0 and covid['specificity'] is None and covid['npv'] is None and alone['mcc'] is None
  assert {'per_class.Covid.specificity', 'per_class.Covid.npv', 'mcc'} <= set(alone['null_reasons'])
  assert json.loads(json.dumps(alone))['per_class']['Covid']['specificity'] is None  # null in metrics.json.
  # Defined zeros stay zeros: Normal present, never predicted right.
  wrong = metrics.classification_metrics(np.array([0, 1]), _one_hot(np.array([0, 0])), CLASSES)
  assert wrong['per_class']['Normal']['recall'] == 0.0 and wrong['per_class']['Normal']['f1'] == 0.0


def test_absent_class_has_support_zero_and_is_left_out_of_macro():
  labels = np.array([0, 0, 1])
  result = metrics.classification_metrics(labels, _one_hot(np.array([0, 2, 1])), CLASSES)
  assert result['per_class']['Viral Pneumonia']['support'] == 0
  assert result['per_class']['Viral Pneumonia']['precision'] == 0.0  # Predicted once, never right.
  assert result['macro_avg_classes'] == ['Covid', 'Normal']
  np.testing.assert_allclose(result['macro_avg']['recall'], (0.5 + 1.0) / 2)


def test_mean_cross_entropy():
  probabilities = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])
  np.testing.assert_allclose(metrics.mean_cross_entropy(np.array([0, 1]), probabilities),
                             -(np.log(0.5) + np.log(0.8)) / 2)


# --- Uncertainty, ROC AUC, calibration and temperature scaling (issue 4). ---


def _sixty_of_sixty_six(seed=0):
  """66 images split 26/20/20 like the study's test folder, 60 predicted right, seeded noisy probabilities."""
  labels = np.repeat([0, 1, 2], [26, 20, 20])
  predicted = labels.copy()
  predicted[[0, 1, 30, 31, 50, 51]] = [1, 2, 0, 2, 0, 1]
  logits = 2.0 * np.eye(3)[predicted] + np.random.default_rng(seed).normal(scale=0.2, size=(66, 3))
  return labels, metrics.apply_temperature(logits, 1.0)


def _pairwise_auc(positive_scores, negative_scores):
  """AUC by brute force: the share of (positive, negative) pairs ranked right, ties counted one half."""
  pairs = [(p > n) + 0.5 * (p == n) for p in positive_scores for n in negative_scores]
  return float(np.mean(pairs))


def test_wilson_interval_pinned_by_hand():
  # 60/66, z = 1.959964: centre (p + z^2/2n) / (1 + z^2/n) = 0.886589, half-width 0.071078.
  np.testing.assert_allclose(metrics.wilson_interval(60, 66), (0.815513, 0.957667), atol=1e-6)
  # 0/10: the upper end is z^2 / (n + z^2); n/n mirrors it.
  np.testing.assert_allclose(metrics.wilson_interval(0, 10), (0.0, 3.841459 / 13.841459), atol=1e-6)
  np.testing.assert_allclose(metrics.wilson_interval(10, 10), (1 - 3.841459 / 13.841459, 1.0), atol=1e-6)
  assert metrics.wilson_interval(40, 40)[1] == 1.0 and metrics.wilson_interval(0, 40)[0] == 0.0  # Exactly.
  lo95, hi95 = metrics.wilson_interval(60, 66)
  lo99, hi99 = metrics.wilson_interval(60, 66, confidence=0.99)
  assert lo99 < lo95 and hi99 > hi95
  assert metrics.wilson_interval(0, 0) == (0.0, 1.0)
  with pytest.raises(ValueError, match='successes'):
    metrics.wilson_interval(7, 6)
  with pytest.raises(ValueError, match='confidence'):
    metrics.wilson_interval(6, 7, confidence=95)


def test_roc_auc_matches_a_pairwise_count_with_ties():
  # Class 0 by hand: positives {0.9, 0.5} vs negatives {0.5, 0.1}: 1 + 1 + 0.5 + 1 of 4 pairs.
  hand = metrics.roc_auc(np.array([0, 0, 1, 1]), np.array([[0.9, 0.1], [0.5, 0.5], [0.5, 0.5], [0.1, 0.9]]), 2)
  assert hand['per_class'][0] == 0.875 and hand['per_class'][1] == 0.875 and hand['macro'] == 0.875
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, size=45)
  probabilities = np.round(rng.dirichlet(np.ones(3), size=45) + 0.3 * np.eye(3)[labels], 1)  # Many ties.
  result = metrics.roc_auc(labels, probabilities, 3)
  expected = [_pairwise_auc(probabilities[labels == c, c], probabilities[labels != c, c]) for c in range(3)]
  np.testing.assert_allclose(result['per_class'], expected, rtol=1e-12)
  np.testing.assert_allclose(result['macro'], np.mean(expected), rtol=1e-12)
  absent = metrics.roc_auc(labels[labels < 2], probabilities[labels < 2], 3)
  assert absent['per_class'][2] is None  # No positives: undefined, and left out of the macro mean.
  np.testing.assert_allclose(absent['macro'], np.mean(absent['per_class'][:2]))
  with pytest.raises(ValueError, match='num_classes'):
    metrics.roc_auc(labels, probabilities, 4)


def test_roc_curve_steps_through_tied_scores_and_its_area_is_the_auc():
  fpr, tpr = metrics.roc_curve(np.array([1, 1, 0, 0]), np.array([0.9, 0.5, 0.5, 0.1]))
  np.testing.assert_array_equal(fpr, [0.0, 0.0, 0.5, 1.0])
  np.testing.assert_array_equal(tpr, [0.0, 0.5, 1.0, 1.0])
  rng = np.random.default_rng(1)
  positive = rng.random(60) < 0.4
  scores = np.round(rng.random(60) + 0.3 * positive, 1)
  fpr, tpr = metrics.roc_curve(positive, scores)
  area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
  np.testing.assert_allclose(area, _pairwise_auc(scores[positive], scores[~positive]), rtol=1e-12)
  with pytest.raises(ValueError, match='positives and negatives'):
    metrics.roc_curve(np.ones(4, int), np.arange(4.0))


def test_stratified_bootstrap_keeps_each_class_support():
  labels = np.random.default_rng(0).permutation(np.repeat([0, 1, 2], [26, 20, 20]))
  indices = metrics.stratified_bootstrap_indices(labels, 500, seed=3)
  assert indices.shape == (500, 66)
  np.testing.assert_array_equal(labels[indices], np.broadcast_to(labels, (500, 66)))  # Same class in each slot.
  assert all(len(np.unique(row)) < 66 for row in indices[:20])  # Drawn with replacement.
  np.testing.assert_array_equal(np.unique(indices), np.arange(66))


def test_resampled_metrics_match_recomputing_each_resample():
  labels, probabilities = _sixty_of_sixty_six()
  stratified = metrics.stratified_bootstrap_indices(labels, 10, seed=1)
  # Plain (unstratified) draws from 6 images: some rows lose a class, which leaves the macro average.
  small_labels, small_probabilities = labels[[0, 1, 2, 30, 31, 50]], probabilities[[0, 1, 2, 30, 31, 50]]
  plain = np.random.default_rng(2).integers(0, 6, size=(30, 6))
  for labels_N, probabilities_NC, indices in ((labels, probabilities, stratified),
                                              (small_labels, small_probabilities, plain)):
    samples = metrics.resampled_metrics(labels_N, probabilities_NC, indices)
    for b, rows in enumerate(indices):
      expected = metrics.classification_metrics(labels_N[rows], probabilities_NC[rows], CLASSES)
      auc = metrics.roc_auc(labels_N[rows], probabilities_NC[rows], 3)
      np.testing.assert_allclose(samples['accuracy'][b], expected['accuracy'])
      for name in ('precision', 'recall', 'f1'):
        np.testing.assert_allclose(samples[f'macro_{name}'][b], expected['macro_avg'][name])
        np.testing.assert_allclose(samples[f'weighted_{name}'][b], expected['weighted_avg'][name])
        # An absent class's recall / F1 is None in classification_metrics and 0 in the resamples' arrays.
        np.testing.assert_allclose(samples[name][b], [expected['per_class'][c][name] or 0.0 for c in CLASSES])
      np.testing.assert_allclose(samples['roc_auc'][b], [np.nan if v is None else v for v in auc['per_class']])
      np.testing.assert_allclose(samples['macro_roc_auc'][b], np.nan if auc['macro'] is None else auc['macro'])
      np.testing.assert_allclose(samples['pr_auc'][b], [np.nan if expected['per_class'][c]['pr_auc'] is None
                                                        else expected['per_class'][c]['pr_auc'] for c in CLASSES])
      for name in ('brier', 'log_loss'):
        np.testing.assert_allclose(samples[name][b], expected[name])
      # An undefined MCC (one class left) is NaN here and None in classification_metrics.
      np.testing.assert_allclose(samples['mcc'][b], np.nan if expected['mcc'] is None else expected['mcc'], atol=1e-12)


def test_bootstrap_intervals_are_seeded():
  labels, probabilities = _sixty_of_sixty_six()
  first = metrics.bootstrap_intervals(labels, probabilities, CLASSES, n_bootstrap=300, seed=0)
  assert first == metrics.bootstrap_intervals(labels, probabilities, CLASSES, n_bootstrap=300, seed=0)
  other = metrics.bootstrap_intervals(labels, probabilities, CLASSES, n_bootstrap=300, seed=1)
  assert other['macro_avg'] != first['macro_avg']
  assert (first['n_bootstrap'], first['seed'], first['confidence']) == (300, 0, 0.95)


@pytest.mark.parametrize('confidence, percentiles', [(0.95, (2.5, 97.5)), (0.8, (10.0, 90.0))])
def test_bootstrap_interval_is_the_resamples_percentiles_at_the_stated_confidence(confidence, percentiles):
  # Recomputed outside lungjax.metrics from the same resamples: accuracy, macro recall and the Brier score of each
  # row of indices, then numpy's percentiles at (1 -/+ confidence) / 2. A 90% interval labelled 95% is narrower.
  labels, probabilities = _sixty_of_sixty_six()
  n_bootstrap, seed = 1000, 4
  indices_BN = metrics.stratified_bootstrap_indices(labels, n_bootstrap, seed)
  labels_BN, predicted_BN = labels[indices_BN], probabilities.argmax(axis=1)[indices_BN]
  right_BN = labels_BN == predicted_BN
  accuracy_B = right_BN.mean(axis=1)
  macro_recall_B = np.mean([right_BN[:, labels == c].mean(axis=1) for c in range(3)], axis=0)
  brier_B = ((probabilities[indices_BN] - np.eye(3)[labels_BN]) ** 2).sum(axis=2).mean(axis=1)
  intervals = metrics.bootstrap_intervals(labels, probabilities, CLASSES, n_bootstrap=n_bootstrap, seed=seed,
                                          confidence=confidence)
  assert intervals['degenerate'] == [] and intervals['confidence'] == confidence
  for got, values_B in ((intervals['accuracy'], accuracy_B), (intervals['macro_avg']['recall'], macro_recall_B),
                        (intervals['brier'], brier_B)):
    np.testing.assert_allclose(got, np.percentile(values_B, percentiles), rtol=1e-9, atol=1e-12)
  # The Brier score has no ties: 1 - confidence of its resamples fall outside the interval, half on each side.
  low, high = intervals['brier']
  assert abs(np.mean(brier_B < low) - (1 - confidence) / 2) <= 0.002
  assert abs(np.mean(brier_B > high) - (1 - confidence) / 2) <= 0.002


def test_bootstrap_interval_contains_the_point_and_narrows_with_more_images():
  labels, probabilities = _sixty_of_sixty_six()
  point = metrics.classification_metrics(labels, probabilities, CLASSES)
  auc = metrics.roc_auc(labels, probabilities, 3)
  small = metrics.metric_intervals(labels, probabilities, CLASSES)
  # Nine copies of the set: the same point values, a third of the standard error.
  large = metrics.metric_intervals(np.tile(labels, 9), np.tile(probabilities, (9, 1)), CLASSES)
  assert small['methods']['wilson_fallback'] == [] and large['methods']['wilson_fallback'] == []
  checks = [(point['accuracy'], ('accuracy', 'wilson')), (point['accuracy'], ('accuracy', 'bootstrap')),
            (point['macro_avg']['recall'], ('macro_avg', 'recall')),
            (point['weighted_avg']['f1'], ('weighted_avg', 'f1')),
            (point['per_class']['Normal']['precision'], ('per_class', 'Normal', 'precision')),
            (point['per_class']['Covid']['recall'], ('per_class', 'Covid', 'recall')),
            (point['per_class']['Normal']['specificity'], ('per_class', 'Normal', 'specificity')),
            (point['per_class']['Viral Pneumonia']['npv'], ('per_class', 'Viral Pneumonia', 'npv')),
            (point['per_class']['Covid']['f1'], ('per_class', 'Covid', 'f1')),
            (point['per_class']['Normal']['pr_auc'], ('per_class', 'Normal', 'pr_auc')),
            (point['mcc'], ('mcc',)), (point['brier'], ('brier',)), (point['log_loss'], ('log_loss',)),
            (auc['macro'], ('roc_auc', 'macro'))]
  for value, keys in checks:
    small_interval, large_interval = small, large
    for key in keys:
      small_interval, large_interval = small_interval[key], large_interval[key]
    assert small_interval[0] <= value <= small_interval[1], keys
    assert large_interval[0] <= value <= large_interval[1], keys
    assert 0 < large_interval[1] - large_interval[0] < 0.5 * (small_interval[1] - small_interval[0]), keys


def _paired_intervals(point, intervals, keys=()):
  """Yields (keys, value, [lo, hi]) for every interval in `intervals` and its point value in `point`."""
  for key, interval in intervals.items():
    if key in ('methods', 'confidence', 'n_bootstrap', 'seed', 'repeats'):
      continue
    if isinstance(interval, dict):
      yield from _paired_intervals(point if key in ('wilson', 'bootstrap') else point[key], interval, keys + (key,))
    else:
      yield keys + (key,), (point if key in ('wilson', 'bootstrap') else point[key]), interval


def test_a_class_all_right_gets_a_wilson_interval_not_a_zero_width_one():
  # 14 of 14 Covid right, the others not: today's percentile bootstrap said recall [1.000, 1.000].
  labels = np.repeat([0, 1, 2], [14, 12, 12])
  predicted = labels.copy()
  predicted[[14, 15, 30]] = [2, 0, 1]
  result = metrics.with_uncertainty(metrics.classification_metrics(labels, _one_hot(predicted), CLASSES),
                                    labels, _one_hot(predicted), n_bootstrap=300, seed=0)
  covid = result['intervals']['per_class']['Covid']
  assert covid['recall'][0] < 0.80 and covid['sensitivity'] == covid['recall']
  np.testing.assert_allclose(covid['recall'], (1 - 3.841459 / 17.841459, 1.0), atol=1e-6)  # Wilson 14/14.
  assert result['intervals']['methods']['per_class']['recall'] == 'wilson'
  # Macro recall varies across resamples (Normal and Viral Pneumonia do): the bootstrap's own interval.
  macro = result['intervals']['macro_avg']['recall']
  assert macro[0] < result['macro_avg']['recall'] < macro[1] and ['macro_avg', 'recall'] not in (
      result['intervals']['methods']['wilson_fallback'])


def test_no_interval_has_zero_width_even_for_a_perfect_classifier():
  labels = np.repeat([0, 1, 2], [14, 10, 8])
  probabilities = 0.8 * np.eye(3)[labels] + 0.1  # Every image right, every class perfectly separated.
  probabilities[::3] = 0.5 * np.eye(3)[labels[::3]] + 0.25  # Two confidence levels: Brier and log loss vary.
  base = metrics.classification_metrics(labels, probabilities, CLASSES)
  result = metrics.with_uncertainty(base, labels, probabilities, n_bootstrap=200, seed=0)
  intervals, point = result['intervals'], result
  checked = 0
  for keys, value, (lo, hi) in _paired_intervals(point, intervals):
    assert lo <= value <= hi and hi - lo > 0.01, (keys, value, lo, hi)  # Wilson's 1.0 is exactly 1.0.
    checked += 1
  assert checked == 3 * 8 + 2 + 3 * 2 + 4 + 3
  fallback = intervals['methods']['wilson_fallback']
  for keys in (['accuracy', 'bootstrap'], ['per_class', 'Covid', 'f1'], ['per_class', 'Normal', 'pr_auc'],
               ['roc_auc', 'per_class', 'Viral Pneumonia'], ['roc_auc', 'macro'], ['macro_avg', 'recall'],
               ['weighted_avg', 'f1'], ['mcc']):
    assert keys in fallback, keys
  assert ['brier'] not in fallback and ['log_loss'] not in fallback
  # The widened intervals: F1 on the class's support, an AUC on its disjoint (positive, negative) pairs,
  # the MCC on the smallest class, rescaled from [-1, 1].
  assert intervals['per_class']['Covid']['f1'] == list(metrics.wilson_interval(14, 14))
  assert intervals['roc_auc']['per_class']['Viral Pneumonia'] == list(metrics.wilson_interval(8, 8))
  assert intervals['roc_auc']['per_class']['Covid'] == list(metrics.wilson_interval(14, 14))  # 14 of 18 others.
  assert intervals['accuracy']['bootstrap'] == intervals['accuracy']['wilson']
  np.testing.assert_allclose(intervals['mcc'], [2 * metrics.wilson_interval(8, 8)[0] - 1, 1.0])
  # One-hot probabilities: Brier and log loss are constant too, and widen on the number of images.
  one_hot = metrics.with_uncertainty(metrics.classification_metrics(labels, np.eye(3)[labels], CLASSES),
                                     labels, np.eye(3)[labels], n_bootstrap=50, seed=0)['intervals']
  np.testing.assert_allclose(one_hot['brier'], [0.0, 2 * metrics.wilson_interval(0, 32)[1]], atol=1e-12)
  assert one_hot['log_loss'][0] < 1e-12 < 0.1 < one_hot['log_loss'][1]


def test_bootstrap_of_66_images_2000_times_takes_well_under_a_second():
  labels, probabilities = _sixty_of_sixty_six()
  seconds = []
  for _ in range(3):
    start = time.perf_counter()
    metrics.bootstrap_intervals(labels, probabilities, CLASSES, n_bootstrap=2000)
    seconds.append(time.perf_counter() - start)
  assert min(seconds) < 0.5


def test_expected_calibration_error_and_reliability_bins_by_hand():
  probabilities = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.62, 0.3, 0.08], [0.3, 0.62, 0.08],
                            [0.0, 1.0, 0.0]])
  labels = np.array([0, 1, 0, 1, 1])
  # Bin 13 (0.867, 0.933]: accuracy 1/2 at confidence 0.9; bin 9 (0.6, 0.667]: 2/2 at 0.62; bin 14: 1/1 at 1.0.
  bins = metrics.reliability_bins(labels, probabilities)
  np.testing.assert_array_equal(bins['counts'], [0] * 9 + [2, 0, 0, 0, 2, 1])
  np.testing.assert_allclose(bins['accuracy'][[9, 13, 14]], [1.0, 0.5, 1.0])
  np.testing.assert_allclose(bins['confidence'][[9, 13, 14]], [0.62, 0.9, 1.0])
  assert np.isnan(bins['accuracy'][0]) and len(bins['edges']) == 16
  np.testing.assert_allclose(metrics.expected_calibration_error(labels, probabilities),
                             (2 * 0.38 + 2 * 0.4 + 0.0) / 5)
  np.testing.assert_allclose(metrics.expected_calibration_error(labels, probabilities, n_bins=1),
                             abs(4 / 5 - (0.9 + 0.9 + 0.62 + 0.62 + 1.0) / 5))
  # Bins are (lo, hi]: a confidence of exactly 0.5 falls in the second of four bins, not the third.
  on_edge = metrics.reliability_bins(np.array([0]), np.array([[0.5, 0.25, 0.25]]), n_bins=4)
  np.testing.assert_array_equal(on_edge['counts'], [0, 1, 0, 0])
  with pytest.raises(ValueError, match='labels_N'):
    metrics.expected_calibration_error(np.array([0, 3]), probabilities[:2])


def test_temperature_scaling_undoes_a_threefold_overconfidence():
  rng = np.random.default_rng(0)
  logits = 2.0 * rng.normal(size=(4000, 3))
  calibrated = metrics.apply_temperature(logits, 1.0)  # Labels drawn from these: calibrated by construction.
  labels = (rng.random(4000)[:, None] > np.cumsum(calibrated, axis=1)).sum(axis=1)
  temperature = metrics.fit_temperature(labels, 3.0 * logits)
  np.testing.assert_allclose(temperature, 3.0, rtol=0.1)
  np.testing.assert_allclose(temperature, 3.0 * metrics.fit_temperature(labels, logits), rtol=1e-5)
  # Log-probabilities are logits up to a per-row constant: the same T.
  log_probabilities = np.log(metrics.apply_temperature(3.0 * logits, 1.0))
  np.testing.assert_allclose(metrics.fit_temperature(labels, log_probabilities), temperature, rtol=1e-5)
  nll = [metrics.mean_cross_entropy(labels, metrics.apply_temperature(3.0 * logits, t))
         for t in (temperature / 1.05, temperature, temperature * 1.05)]
  assert nll[1] < nll[0] and nll[1] < nll[2]
  before = metrics.expected_calibration_error(labels, metrics.apply_temperature(3.0 * logits, 1.0))
  after = metrics.expected_calibration_error(labels, metrics.apply_temperature(3.0 * logits, temperature))
  assert after < before / 2


def test_apply_temperature_is_a_scaled_softmax():
  logits = np.array([[2.0, 0.0, -1.0], [1000.0, 999.0, 0.0]])
  halved = metrics.apply_temperature(logits, 2.0)
  np.testing.assert_allclose(halved[0], np.exp([1.0, 0.0, -0.5]) / np.exp([1.0, 0.0, -0.5]).sum())
  np.testing.assert_allclose(halved.sum(axis=1), 1.0)
  assert np.all(np.isfinite(halved))
  for bad in (0.0, -1.0, float('nan')):
    with pytest.raises(ValueError, match='temperature'):
      metrics.apply_temperature(logits, bad)


def test_with_uncertainty_nests_intervals_like_the_values_and_keeps_every_key():
  labels, probabilities = _sixty_of_sixty_six()
  base = metrics.classification_metrics(labels, probabilities, CLASSES)
  result = metrics.with_uncertainty(base, labels, probabilities, n_bootstrap=500, seed=0)
  assert 'intervals' not in base and all(result[key] == value for key, value in base.items())
  intervals = result['intervals']
  bootstrap = metrics.bootstrap_intervals(labels, probabilities, CLASSES, n_bootstrap=500, seed=0)
  assert intervals['accuracy'] == {'wilson': list(metrics.wilson_interval(60, 66)),
                                   'bootstrap': bootstrap['accuracy']}
  assert intervals['macro_avg']['recall'] == bootstrap['macro_avg']['recall']
  assert intervals['per_class']['Viral Pneumonia']['f1'] == bootstrap['per_class']['Viral Pneumonia']['f1']
  assert intervals['roc_auc']['macro'] == bootstrap['roc_auc']['macro']
  auc = metrics.roc_auc(labels, probabilities, 3)
  assert result['roc_auc'] == {'per_class': dict(zip(CLASSES, auc['per_class'])), 'macro': auc['macro']}
  assert result['calibration'] == {'ece': metrics.expected_calibration_error(labels, probabilities), 'n_bins': 15}
  assert json.loads(json.dumps(result))['intervals']['per_class']['Covid']['recall'] == (
      intervals['per_class']['Covid']['recall'])
  with pytest.raises(ValueError, match='confusion_matrix'):
    metrics.with_uncertainty(base, labels[::-1], probabilities, n_bootstrap=10, seed=0)
  with pytest.raises(ValueError, match='columns'):
    metrics.with_uncertainty(base, labels, probabilities[:, :2], n_bootstrap=10, seed=0)


def test_pooled_repeats_resample_images_with_all_their_predictions_and_count_images():
  labels_G = np.array([0] * 10 + [1] * 10 + [2] * 10)
  rng = np.random.default_rng(0)
  hard_G = rng.random(30) < 0.2  # Seeds agree on which images are hard, as real runs do.
  runs = [np.eye(3)[np.where(hard_G & (rng.random(30) < 0.9), (labels_G + 1) % 3, labels_G)] * 0.9 + 0.1 / 3
          for _ in range(5)]
  labels_N, probabilities_NC = np.tile(labels_G, 5), np.concatenate(runs)
  indices_BN = metrics.stratified_bootstrap_indices(labels_N, 50, seed=0, repeats=5)
  assert indices_BN.shape == (50, 150)
  np.testing.assert_array_equal(indices_BN[:, 30:60], indices_BN[:, :30] + 30)  # Each image brings all 5 rows.
  np.testing.assert_array_equal(labels_N[indices_BN], np.broadcast_to(labels_N, indices_BN.shape))
  pooled = metrics.metric_intervals(labels_N, probabilities_NC, ['a', 'b', 'c'], n_bootstrap=200, repeats=5)
  as_if_independent = metrics.metric_intervals(labels_N, probabilities_NC, ['a', 'b', 'c'], n_bootstrap=200)
  correct = int((probabilities_NC.argmax(-1) == labels_N).sum())
  np.testing.assert_allclose(pooled['accuracy']['wilson'], metrics.wilson_interval(correct / 5, 30))
  width = lambda interval: interval[1] - interval[0]  # pylint: disable=unnecessary-lambda-assignment
  assert width(pooled['accuracy']['wilson']) > 2 * width(as_if_independent['accuracy']['wilson'])
  assert width(pooled['macro_avg']['f1']) > 1.5 * width(as_if_independent['macro_avg']['f1'])
  with pytest.raises(ValueError, match='repeats=4'):
    metrics.stratified_bootstrap_indices(labels_N, 5, seed=0, repeats=4)
  with pytest.raises(ValueError, match='same images'):
    metrics.stratified_bootstrap_indices(np.concatenate([labels_G, labels_G[::-1]]), 5, seed=0, repeats=2)


# Numbers of the hand-written Wilson formula and golden-section temperature search that scipy replaced (main at
# ef26524): scipy.stats.binomtest's Wilson interval must agree to 1e-14, minimize_scalar's T to 1e-6 (the old
# search stopped at 1e-6 in log T).
_OLD_WILSON = {
    (60, 66, 0.9): (0.8337026860785988, 0.9522600948734112),
    (60, 66, 0.95): (0.8155127011503412, 0.9576670249294886),
    (60, 66, 0.99): (0.7771406086457902, 0.9663036932937927),
    (0, 10, 0.9): (0.0, 0.21294197008340682),
    (0, 10, 0.95): (0.0, 0.27753279986288915),
    (0, 10, 0.99): (0.0, 0.39885409330490795),
    (10, 10, 0.9): (0.7870580299165931, 1.0),
    (10, 10, 0.95): (0.7224672001371109, 1.0),
    (10, 10, 0.99): (0.6011459066950919, 1.0),
    (3, 7, 0.9): (0.18644319036395612, 0.7105229089864071),
    (3, 7, 0.95): (0.1582198552514697, 0.7495416354723428),
    (3, 7, 0.99): (0.11637368051613817, 0.8102850959116124),
    (1, 1, 0.9): (0.2698659487840544, 1.0),
    (1, 1, 0.95): (0.20654931437723745, 1.0),
    (1, 1, 0.99): (0.13097754328018585, 1.0),
    (12, 14, 0.9): (0.6470626062241376, 0.951541086464978),
    (12, 14, 0.95): (0.6005862050302966, 0.9599060787285352),
    (12, 14, 0.99): (0.5130504555275497, 0.9715654935295974),
    (250, 251, 0.9): (0.9823420529524197, 0.9991106839880844),
    (250, 251, 0.95): (0.9777816987087616, 0.999296368385478),
    (250, 251, 0.99): (0.9669519028107381, 0.9995320762039783),
}
_OLD_TEMPERATURE = {0: (3.0, 3.717849988773447), 1: (0.3, 0.5515951028812015), 2: (1.0, 1.7783593967146132)}


@pytest.mark.parametrize('successes, n, confidence', sorted(_OLD_WILSON))
def test_wilson_interval_equals_the_old_formula(successes, n, confidence):
  np.testing.assert_allclose(metrics.wilson_interval(successes, n, confidence), _OLD_WILSON[successes, n, confidence],
                             rtol=1e-14, atol=0)


def test_wilson_interval_of_fractional_counts_is_continuous_with_whole_ones():
  # 24.2 of 30 (pooled predictions / repeats) take the formula by hand; whole neighbours take scipy's.
  low, high = metrics.wilson_interval(24.2, 30)
  assert metrics.wilson_interval(24, 30)[0] < low < metrics.wilson_interval(25, 30)[0]
  np.testing.assert_allclose(metrics.wilson_interval(24 + 1e-7, 30), metrics.wilson_interval(24, 30), atol=1e-7)


@pytest.mark.parametrize('seed', sorted(_OLD_TEMPERATURE))
def test_fit_temperature_equals_the_old_golden_section_search(seed):
  scale, old = _OLD_TEMPERATURE[seed]
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(120, 3)) * scale
  labels = rng.integers(0, 3, 120)
  labels[:60] = logits[:60].argmax(-1)
  np.testing.assert_allclose(metrics.fit_temperature(labels, logits), old, rtol=1e-6)


def test_mean_and_std_over_runs():
  def run(accuracy):
    row = {'precision': accuracy, 'recall': accuracy, 'f1': accuracy}
    return {'accuracy': accuracy, 'macro_avg': row, 'weighted_avg': row, 'per_class': {'a': row}}
  summary = metrics.mean_and_std([run(0.8), run(0.9), run(1.0)], ['a'])
  assert summary['accuracy']['values'] == [0.8, 0.9, 1.0]
  np.testing.assert_allclose(summary['accuracy']['mean'], 0.9)
  np.testing.assert_allclose(summary['a.f1']['std'], 0.1)
  one = metrics.mean_and_std([run(0.8)], ['a'])
  assert one['accuracy'] == {'mean': 0.8, 'std': 0.0, 'values': [0.8]}
  assert 'mcc' not in one and 'roc_auc.macro' not in one  # Absent from the runs' metrics: left out, not zero.
