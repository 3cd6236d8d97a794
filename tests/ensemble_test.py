"""Evaluation that averages several checkpoints (an ensemble) and test-time augmented views."""

import copy
import os

import numpy as np
import pytest

from lungjax import evaluate, train
from lungjax.runtime import workdir as workdir_lib
from tests.conftest import CLASSES


@pytest.fixture(scope='module')
def two_runs(tmp_path_factory, synthetic_root):
  from configs import tiny
  runs = []
  for seed in (0, 1):
    config = tiny.get_config()
    config.data.root = synthetic_root
    config.seed = seed
    workdir = str(tmp_path_factory.mktemp(f'seed_{seed}'))
    train.train_and_evaluate(config, workdir)
    runs.append((config, workdir))
  return runs


def _eval(config, workdir, folder, suffix='', **eval_fields):
  out_name = ('validation' if folder == evaluate.VALIDATION else
              'folder-' + workdir_lib.folder_identity([folder]) + suffix)
  config = copy.deepcopy(config)
  config.eval.dir = folder
  for key, value in eval_fields.items():
    setattr(config.eval, key, value)
  metrics = evaluate.evaluate_checkpoint(config, workdir)
  assert metrics['out_dir'] == os.path.join(workdir, 'eval', out_name)
  _, labels, probabilities = evaluate.read_predictions(
      os.path.join(workdir, 'eval', out_name, 'predictions.csv'), CLASSES)
  return metrics, labels, probabilities


@pytest.mark.slow
def test_ensemble_averages_member_probabilities_and_says_so(two_runs, synthetic_root):
  folder = os.path.join(synthetic_root, 'test')
  (config_a, workdir_a), (config_b, workdir_b) = two_runs
  _, labels, probs_a = _eval(config_a, workdir_a, folder)
  _, _, probs_b = _eval(config_b, workdir_b, folder)
  metrics, ensemble_labels, probs = _eval(config_a, workdir_a, folder, '_ensemble', ensemble=workdir_b)
  assert (ensemble_labels == labels).all()
  np.testing.assert_allclose(probs, (probs_a + probs_b) / 2, atol=2e-6)
  assert [c['workdir'] for c in metrics['averaged']['checkpoints']] == [workdir_a, workdir_b]
  report = open(os.path.join(metrics['out_dir'], 'report.md')).read()
  assert 'mean probabilities of 2 checkpoint(s)' in report


@pytest.mark.slow
def test_test_time_augmentation_averages_seeded_views(two_runs, synthetic_root):
  folder = os.path.join(synthetic_root, 'test')
  config, workdir = two_runs[0]
  _, _, plain = _eval(config, workdir, folder)
  metrics, _, tta = _eval(config, workdir, folder, '_tta3', tta_views=3)
  _, _, again = _eval(config, workdir, folder, '_tta3', tta_views=3)
  assert metrics['averaged']['tta_views'] == 3
  assert not np.allclose(tta, plain, atol=1e-4)
  np.testing.assert_array_equal(tta, again)
  np.testing.assert_allclose(tta.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_validation_split_is_evaluated_as_training_made_it(two_runs):
  config, workdir = two_runs[0]
  metrics, _, probabilities = _eval(config, workdir, evaluate.VALIDATION)
  _, _, at_training_end = evaluate.read_predictions(os.path.join(workdir, 'eval', 'val', 'predictions.csv'), CLASSES)
  np.testing.assert_allclose(probabilities, at_training_end, atol=2e-6)
  assert metrics['n_images'] == len(at_training_end)


def test_negative_views_name_the_field():
  with pytest.raises(ValueError, match='config.eval.tta_views'):
    evaluate.view_keys(0, -1)
