"""calibration: cross-fitted temperature scaling (issue 12): no image scaled by a temperature fitted on it."""

import json

import numpy as np
import pytest

from lungjax import calibration, evaluate, metrics
from lungjax.report import markdown as report

CLASSES = ('Covid', 'Normal', 'Viral Pneumonia')


def _overconfident(n=60, seed=0):
  """Labels drawn from softmax(logits), then probabilities from 3 x logits: overconfident by a factor of 3."""
  rng = np.random.default_rng(seed)
  logits_NC = rng.normal(scale=1.5, size=(n, 3))
  true_NC = metrics.apply_temperature(logits_NC, 1.0)
  labels_N = np.array([rng.choice(3, p=row) for row in true_NC])
  return labels_N, metrics.apply_temperature(3.0 * logits_NC, 1.0).astype(np.float32)


def test_stratified_folds_spread_every_class_and_are_seeded():
  labels = np.repeat([0, 1, 2], [13, 9, 7])
  folds = calibration.stratified_folds(labels, 5, seed=3)
  sizes = np.bincount(folds, minlength=5)
  assert sizes.sum() == 29 and sizes.max() - sizes.min() <= 1
  for label in range(3):
    per_fold = np.bincount(folds[labels == label], minlength=5)
    assert per_fold.max() - per_fold.min() <= 1  # Every class dealt round-robin over the folds.
  np.testing.assert_array_equal(folds, calibration.stratified_folds(labels, 5, seed=3))
  assert not np.array_equal(folds, calibration.stratified_folds(labels, 5, seed=4))
  for bad in (1, 30):
    with pytest.raises(ValueError, match='folds'):
      calibration.stratified_folds(labels, bad, seed=0)


def test_cross_fit_scales_each_image_by_a_temperature_fitted_without_it():
  labels, probabilities = _overconfident()
  fit = calibration.cross_fit(labels, probabilities, n_folds=5, seed=1)
  log_p = calibration.log_probabilities(probabilities)
  assert fit.n_folds == 5 and fit.seed == 1
  np.testing.assert_array_equal(fit.folds_N, calibration.stratified_folds(labels, 5, seed=1))
  np.testing.assert_allclose(fit.temperature, metrics.fit_temperature(labels, log_p), rtol=1e-12)
  assert 2.0 < fit.temperature < 4.5  # The threefold overconfidence, found.
  for fold, temperature in enumerate(fit.fold_temperatures):
    outside = fit.folds_N != fold
    np.testing.assert_allclose(temperature, metrics.fit_temperature(labels[outside], log_p[outside]), rtol=1e-12)
    np.testing.assert_allclose(fit.calibrated_NC[~outside], metrics.apply_temperature(log_p[~outside], temperature),
                               rtol=1e-12)
  assert len(set(fit.fold_temperatures)) == 5

  # Change only fold 2's predictions (the folds depend on the labels alone, so they stay): fold 2's temperature and
  # scaling stay exactly as they were, every other fold's temperature moves (fold 2 was in its fit).
  changed = probabilities.copy()
  in_fold = fit.folds_N == 2
  changed[in_fold] = metrics.apply_temperature(10.0 * log_p[in_fold], 1.0)
  refit = calibration.cross_fit(labels, changed, n_folds=5, seed=1)
  np.testing.assert_array_equal(refit.folds_N, fit.folds_N)
  assert refit.fold_temperatures[2] == fit.fold_temperatures[2]
  np.testing.assert_allclose(refit.calibrated_NC[in_fold], calibration.scale_probabilities(
      changed[in_fold], fit.fold_temperatures[2]), rtol=1e-12)
  assert all(refit.fold_temperatures[k] != fit.fold_temperatures[k] for k in (0, 1, 3, 4))
  assert refit.temperature != fit.temperature


def test_cross_fit_lowers_the_folds_to_the_number_of_images():
  labels, probabilities = _overconfident(n=3)
  fit = calibration.cross_fit(labels, probabilities, n_folds=5, seed=0)
  assert fit.n_folds == 3 and sorted(fit.folds_N.tolist()) == [0, 1, 2]
  with pytest.raises(ValueError, match='folds'):
    calibration.cross_fit(labels[:1], probabilities[:1])


def test_scale_probabilities_is_softmax_of_logits_over_temperature():
  logits = np.random.default_rng(2).normal(scale=4.0, size=(20, 3))
  probabilities = metrics.apply_temperature(logits, 1.0).astype(np.float32)  # What a float32 model serves.
  for temperature in (0.5, 1.0, 2.7):
    np.testing.assert_allclose(calibration.scale_probabilities(probabilities, temperature),
                               metrics.apply_temperature(logits, temperature), atol=1e-6)
  with pytest.raises(ValueError, match='temperature'):
    calibration.scale_probabilities(probabilities, 0.0)


def test_record_says_how_the_temperature_was_fitted_and_checks_it_out_of_fold(tmp_path):
  labels, probabilities = _overconfident()
  fit = calibration.cross_fit(labels, probabilities, n_folds=4, seed=7)
  record = calibration.record(fit, labels, probabilities, checkpoint_step=42)
  assert set(record) == {'method', 'temperature', 'fitted_temperature', 'served', 'fitted_on', 'cross_fit', 'n_bins',
                         'ece_raw', 'ece_calibrated_out_of_fold', 'note'}
  assert record['method'] == 'temperature scaling' and record['temperature'] == fit.temperature
  assert record['fitted_temperature'] == fit.temperature and record['served'].startswith('the fitted T = ')
  assert record['ece_calibrated_out_of_fold'] < record['ece_raw']  # Overconfident: the fit helps, and is served.
  assert record['fitted_on'] == {'split': 'validation', 'n_images': 60, 'checkpoint_step': 42}
  assert record['cross_fit'] == {'folds': 4, 'seed': 7, 'stratified_by': 'class',
                                 'fold_temperatures': list(fit.fold_temperatures)}
  assert record['ece_raw'] == metrics.expected_calibration_error(labels, probabilities)
  assert record['ece_calibrated_out_of_fold'] == metrics.expected_calibration_error(labels, fit.calibrated_NC)
  in_sample = metrics.expected_calibration_error(labels, calibration.scale_probabilities(probabilities,
                                                                                         fit.temperature))
  assert record['ece_calibrated_out_of_fold'] != in_sample  # Not the ECE on the images the served T was fitted on.
  assert 'also selected the checkpoint' in record['note']

  calibration.write(str(tmp_path), record)
  assert json.loads((tmp_path / 'calibration.json').read_text()) == record
  assert calibration.read(str(tmp_path)) == record
  assert calibration.served_temperature(str(tmp_path)) == fit.temperature


def test_a_workdir_without_calibration_serves_temperature_one_and_a_bad_one_is_named(tmp_path):
  assert calibration.read(str(tmp_path)) is None
  assert calibration.served_temperature(str(tmp_path)) == 1.0
  (tmp_path / 'calibration.json').write_text(json.dumps({'temperature': -2.0}))
  with pytest.raises(ValueError, match='calibration.json: temperature=-2.0'):
    calibration.served_temperature(str(tmp_path))


def _evaluation(labels, probabilities, record, fitted_here, tmp_path):
  """metrics as report_predictions builds them, the calibration added, and the report.md text."""
  result = metrics.with_uncertainty(metrics.classification_metrics(labels, probabilities, CLASSES), labels,
                                    probabilities, n_bootstrap=20, seed=0)
  result['checkpoint_step'] = 42
  evaluate.add_calibration(result, labels, probabilities, record, fitted_here)
  out_dir = tmp_path / ('val' if fitted_here else 'other')
  report.write_evaluation(result, str(out_dir), 'run', labels, probabilities)
  return result, (out_dir / 'report.md').read_text()


def test_the_fit_images_report_the_out_of_fold_ece_and_other_folders_the_served_temperature(tmp_path):
  labels, probabilities = _overconfident()
  fit = calibration.cross_fit(labels, probabilities, n_folds=5, seed=0)
  record = calibration.record(fit, labels, probabilities, checkpoint_step=42)

  result, text = _evaluation(labels, probabilities, record, True, tmp_path)
  assert 'ece_after_temperature' not in result['calibration']
  assert result['calibration']['calibrated_by'] == 'out of fold'
  assert result['calibration']['ece_calibrated'] == record['ece_calibrated_out_of_fold']
  assert result['calibration']['fold_temperatures'] == list(fit.fold_temperatures)
  assert f'confidence bins), raw: {record["ece_raw"]:.3f}.' in text
  assert (f'ECE after temperature scaling, out of fold: {record["ece_calibrated_out_of_fold"]:.3f} ('
          'each image scaled by the temperature fitted on the other 4 of 5 class-stratified folds') in text
  assert 'chose the checkpoint' in text

  other_labels, other_probabilities = _overconfident(n=30, seed=9)
  result, text = _evaluation(other_labels, other_probabilities, record, False, tmp_path)
  expected = metrics.expected_calibration_error(
      other_labels, calibration.scale_probabilities(other_probabilities, fit.temperature))
  assert result['calibration']['calibrated_by'] == 'served temperature'
  assert result['calibration']['ece_calibrated'] == expected
  assert result['calibration']['temperature'] == fit.temperature
  assert f'raw: {result["calibration"]["ece"]:.3f}.' in text
  assert (f'ECE after temperature scaling, served temperature: {expected:.3f} (the served T = '
          f'{fit.temperature:.3f}, fitted on the run\'s validation split (60 images, checkpoint step 42), applied '
          'unchanged to this folder).') in text

  # Predictions of another step than the one the temperature was fitted for: said so.
  served = calibration.served_summary(record, other_labels, other_probabilities, 15, checkpoint_step=50)
  assert 'it was fitted for step 42, not this step 50: T = 1.0' in served['calibrated_how']
  assert served['temperature'] == 1.0  # Never paired with another step.
  assert served['ece_calibrated'] == pytest.approx(metrics.expected_calibration_error(other_labels, other_probabilities,
                                                                                  15), rel=1e-6)


def test_a_temperature_that_worsens_its_own_out_of_fold_check_is_not_served(tmp_path, caplog):
  """Low 6 of issue 26: 12 images already calibrated; the fitted T (0.765) doubles the out-of-fold ECE: T = 1.0 is
  served, calibration.json keeps the fit and says why, and the validation report says so too."""
  rng = np.random.default_rng(3)
  probabilities = metrics.apply_temperature(rng.normal(size=(12, 3)), 1.0)
  labels = np.array([rng.choice(3, p=row) for row in probabilities])
  probabilities = probabilities.astype(np.float32)
  fit = calibration.cross_fit(labels, probabilities, n_folds=4, seed=0)
  with caplog.at_level('WARNING'):
    record = calibration.record(fit, labels, probabilities, checkpoint_step=42)
  assert record['ece_calibrated_out_of_fold'] > record['ece_raw']
  assert record['temperature'] == 1.0 and record['fitted_temperature'] == fit.temperature != 1.0
  assert 'made calibration worse on its own out-of-fold check' in record['served'] and 'T = 1.0' in record['served']
  assert 'made calibration worse' in caplog.text
  calibration.write(str(tmp_path), record)
  assert calibration.served_temperature(str(tmp_path)) == 1.0
  assert calibration.served_temperature(str(tmp_path), checkpoint_step=42) == 1.0
  result, text = _evaluation(labels, probabilities, record, True, tmp_path)
  assert 'Served: T = 1.0 (none): the fitted T = 0.765 made calibration worse' in text
  assert result['calibration']['served'] == record['served']


def test_a_temperature_is_never_served_with_another_step_than_it_was_fitted_for(tmp_path, caplog):
  """Medium 7 of issue 26: the best step deleted (or another asked for): the raw softmax, with a warning."""
  labels, probabilities = _overconfident()
  fit = calibration.cross_fit(labels, probabilities, n_folds=4, seed=7)
  calibration.write(str(tmp_path), calibration.record(fit, labels, probabilities, checkpoint_step=42))
  assert calibration.served_temperature(str(tmp_path), checkpoint_step=42) == fit.temperature != 1.0
  assert calibration.served_temperature(str(tmp_path)) == fit.temperature  # No step named: the record's.
  with caplog.at_level('WARNING'):
    assert calibration.served_temperature(str(tmp_path), checkpoint_step=30) == 1.0
  assert 'fitted for checkpoint step 42, not step 30' in caplog.text
