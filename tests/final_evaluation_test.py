"""final_evaluation.py: after training, the best checkpoint's reports on validation and test/, summary.json (as
returned), calibration.json, the curves and the model card, one unit (written by one short run: train_test)."""

import json
import os

import numpy as np

from lungjax import evaluate, final_evaluation
from lungjax.runtime import workdir as workdir_lib
from tests.train_test import one_epoch_run  # pylint: disable=unused-import  (a fixture: one epoch of tiny)


def test_the_summary_returned_is_the_one_written_with_each_splits_evaluation(one_epoch_run):
  _, workdir, summary = one_epoch_run
  assert isinstance(summary, final_evaluation.RunSummary)
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f) == json.loads(json.dumps(dict(summary)))
  assert sorted(summary['evaluations']) == ['test', 'val']
  for name, entry in summary['evaluations'].items():
    assert entry['dir'] == os.path.join(workdir, 'eval', name)
    with open(os.path.join(entry['dir'], 'metrics.json')) as f:
      written = json.load(f)
    assert written['accuracy'] == entry['accuracy'] and written['macro_avg']['recall'] == entry['macro_avg']['recall']
    assert written['checkpoint_step'] == summary['best_step']
  with open(os.path.join(workdir, 'eval', 'test', 'metrics.json')) as f:
    assert json.load(f)['n_images'] == 6


def test_the_validation_predictions_returned_are_those_reported(one_epoch_run):
  config, workdir, summary = one_epoch_run
  validation = summary.validation
  assert len(validation.labels_N) == summary['n_val'] and validation.probabilities_NC.shape == (summary['n_val'], 3)
  accuracy = np.mean(validation.probabilities_NC.argmax(-1) == validation.labels_N)
  np.testing.assert_allclose(summary['evaluations']['val']['accuracy'], accuracy)
  _, labels_N, probabilities_NC = evaluate.read_predictions(os.path.join(workdir, 'eval', 'val', 'predictions.csv'),
                                                            tuple(config.data.classes))
  np.testing.assert_array_equal(labels_N, validation.labels_N)
  np.testing.assert_allclose(probabilities_NC, validation.probabilities_NC, atol=5e-7)


def test_calibration_curves_and_model_card_are_written_as_one_unit(one_epoch_run):
  _, workdir, summary = one_epoch_run
  with open(os.path.join(workdir, 'calibration.json')) as f:
    assert json.load(f)['temperature'] == summary['temperature']
  for name in ('curves.png', 'MODEL_CARD.md', workdir_lib.COMPLETE):
    assert os.path.isfile(os.path.join(workdir, name)), name
  with open(os.path.join(workdir, 'MODEL_CARD.md')) as f:
    assert 'tiny' in f.read()
