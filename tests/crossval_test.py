"""Grouped k-fold cross-validation and seed repeats: every image validated once, mean ± std over runs."""

import json
import os

import numpy as np
import pytest

from lungjax import evaluate
from lungjax.experiments import crossval
from lungjax.data import splits


def test_folds_validate_every_image_once_keep_groups_and_stratify():
  labels = np.array([0] * 30 + [1] * 20 + [2] * 10)
  groups = [i // 3 if i < 12 else i for i in range(60)]  # Four triples of copies among the Covid images.
  folds = splits.grouped_stratified_folds(labels, groups, 5, seed=0)
  validated = np.concatenate([val for _, val in folds])
  assert sorted(validated.tolist()) == list(range(60))
  for train, val in folds:
    assert not set(train) & set(val)
    assert not {groups[i] for i in train} & {groups[i] for i in val}
    counts = np.bincount(labels[val], minlength=3)
    assert abs(counts[0] - 6) <= 2 and counts[1] == 4 and counts[2] == 2
  again = splits.grouped_stratified_folds(labels, groups, 5, seed=0)
  assert all((a[1] == b[1]).all() for a, b in zip(folds, again))


def test_one_fold_is_an_error_naming_the_field():
  with pytest.raises(ValueError, match='config.cv.folds'):
    splits.grouped_stratified_folds([0, 1], [0, 1], 1, 0)


@pytest.mark.slow
def test_cross_validation_pools_out_of_fold_predictions(tmp_path, tiny_config):
  tiny_config.cv.folds = 3
  result = crossval.run(tiny_config, str(tmp_path))
  assert result['n_runs'] == 3
  pooled = result['pooled_out_of_fold']
  assert pooled['n_images'] == 36 and sum(map(sum, pooled['confusion_matrix'])) == 36
  per_fold = [json.load(open(os.path.join(tmp_path, f'fold_{k}', 'eval', 'val', 'metrics.json'))) for k in range(3)]
  assert sum(m['n_images'] for m in per_fold) == 36
  np.testing.assert_allclose(result['summary']['accuracy']['mean'], np.mean([m['accuracy'] for m in per_fold]))
  assert os.path.exists(tmp_path / 'cv' / 'report.md') and os.path.exists(tmp_path / 'cv' / 'pooled' / 'report.md')


@pytest.mark.slow
def test_seeds_report_mean_and_std_and_pool_every_seed_on_the_same_images(tmp_path, tiny_config):
  tiny_config.seeds = 2
  result = crossval.run(tiny_config, str(tmp_path))
  assert result['n_runs'] == 2 and [os.path.basename(r) for r in result['runs']] == ['seed_0', 'seed_1']
  per_seed = [json.load(open(os.path.join(r, 'eval', 'val', 'metrics.json'))) for r in result['runs']]
  np.testing.assert_allclose(result['summary']['accuracy']['values'], [m['accuracy'] for m in per_seed])
  pooled = result['pooled']
  assert pooled['n_images'] == 2 * per_seed[0]['n_images'] and pooled['intervals']['repeats'] == 2
  np.testing.assert_allclose(pooled['accuracy'], np.mean([m['accuracy'] for m in per_seed]))
  # Pooled in memory, the numbers are those of the runs' own files (metrics.json, predictions.csv) to the last bit.
  assert result['summary']['log_loss']['values'] == [m['log_loss'] for m in per_seed]
  classes = tuple(tiny_config.data.classes)
  read = [evaluate.read_predictions(os.path.join(r, 'eval', 'val', 'predictions.csv'), classes) for r in result['runs']]
  labels_N, probabilities_NC = np.concatenate([r[1] for r in read]), np.concatenate([r[2] for r in read])
  from_files = evaluate.evaluation_metrics(labels_N, probabilities_NC, classes)
  assert (pooled['log_loss'], pooled['brier'], pooled['confusion_matrix']) == (
      from_files['log_loss'], from_files['brier'], from_files['confusion_matrix'])
  assert 'count' in (tmp_path / 'seeds' / 'report.md').read_text()
  assert (tmp_path / 'seeds' / 'pooled' / 'report.md').exists()
