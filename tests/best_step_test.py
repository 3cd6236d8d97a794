"""The best checkpoint and the validation numbers, checked from the metrics themselves, not from the manager that
chose the step (issue 26's surviving mutants: best_mode='min', training augmentation inside the eval step)."""

import os

import numpy as np
import pytest

import lungjax
from configs import tiny
from lungjax import checkpoints, metrics as metrics_lib, train
from lungjax.data import loading


@pytest.fixture(scope='module')
def augmented_run(tmp_path_factory, synthetic_root):
  """4 epochs of the tiny config (lr 1e-2) with augmentation on every image, every step kept: (config, workdir, summary)."""
  config = tiny.get_config()
  config.data.root = synthetic_root
  config.train.num_epochs = 4
  config.train.learning_rate = 1e-2  # The tiny model leaves chance within 4 epochs: the epochs' metrics differ.
  config.checkpoint.keep_latest = 4
  config.checkpoint.best_metric = 'accuracy'
  config.augment.enabled = True
  config.augment.shift_prob = config.augment.brightness_prob = 1.0
  config.augment.rotation_prob = config.augment.zoom_prob = config.augment.contrast_prob = 0.0
  workdir = str(tmp_path_factory.mktemp('augmented run'))
  summary = train.train_and_evaluate(config, workdir)
  return config, workdir, summary


def test_the_best_checkpoint_is_the_step_with_the_highest_validation_metric(augmented_run):
  config, workdir, summary = augmented_run
  by_step = {row['step']: row['val_accuracy'] for row in summary['history']}
  assert len(by_step) == 4
  top, bottom = max(by_step.values()), min(by_step.values())
  assert top > bottom, by_step  # Epochs that differ: a best mode turned around would pick another step.
  saved = sorted(int(n) for n in os.listdir(checkpoints.checkpoint_dir(workdir)) if n.isdigit())
  assert saved == sorted(by_step), saved
  best = lungjax.load(workdir)  # config.eval.step -1: the best by config.checkpoint.best_metric.
  assert by_step[best.checkpoint_step] == top, (best.checkpoint_step, by_step)
  assert summary['best_step'] == best.checkpoint_step


def test_validation_metrics_are_of_the_images_as_they_are_not_augmented(augmented_run):
  """The history's val_loss of every step equals the loss of that step's model on the validation images, read with
  no augmentation (the inference path); training's augmentation inside the eval step would change it."""
  config, workdir, summary = augmented_run
  val = loading.load_training_data(config).val
  assert len(val) > 0
  for row in summary['history']:
    model = lungjax.load(workdir, step=row['step'])
    probabilities_NC = model.probabilities(np.asarray(val.images_NHWC))
    np.testing.assert_allclose(metrics_lib.mean_cross_entropy(val.labels_N, probabilities_NC), row['val_loss'],
                               rtol=1e-5, atol=1e-6, err_msg=f'step {row["step"]}')
    accuracy = float(np.mean(probabilities_NC.argmax(axis=1) == val.labels_N))
    assert abs(accuracy - row['val_accuracy']) < 1e-9, row


def test_a_deleted_best_step_is_not_served_with_its_temperature(augmented_run, tmp_path, caplog):
  """Issue 26, Medium 7: with the best step gone, lungjax.load restores another step and serves it at T = 1.0 (the
  raw softmax), saying so, never the temperature fitted for the best step; the best step itself keeps its own."""
  import shutil  # pylint: disable=g-import-not-at-top
  from lungjax import calibration  # pylint: disable=g-import-not-at-top
  _, workdir, summary = augmented_run
  copy = str(tmp_path / 'copy')
  shutil.copytree(workdir, copy)
  record = calibration.read(copy)
  assert record['fitted_on']['checkpoint_step'] == summary['best_step']
  calibration.write(copy, {**record, 'temperature': 2.0})  # A temperature other than 1.0 (whichever was served).
  from lungjax.runtime import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  marked = workdir_lib.read_json(os.path.join(copy, workdir_lib.COMPLETE))['files']
  workdir_lib.finish_unit(copy, marked)  # The run's final outputs, this edit included, as one unit again.
  assert lungjax.load(copy).temperature == 2.0  # The best step: its own temperature.
  shutil.rmtree(os.path.join(checkpoints.checkpoint_dir(copy), str(summary['best_step'])))
  with caplog.at_level('WARNING'):
    model = lungjax.load(copy)
    assert model.checkpoint_step != summary['best_step']
    assert model.temperature == 1.0
  assert f'fitted for checkpoint step {summary["best_step"]}, not step {model.checkpoint_step}' in caplog.text
  images = [np.full((32, 32), 90, np.uint8), np.full((32, 32), 200, np.uint8)]
  np.testing.assert_allclose(model.predict(images), model.predict(images, calibrated=False), rtol=1e-6)
