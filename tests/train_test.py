"""train.py: one short train_and_evaluate (one epoch of the tiny config, 4 steps): its steps,
split, checkpoint and run files. The reports it ends with: final_evaluation_test."""

import json
import os

import numpy as np
import pytest

from configs import tiny
from lungjax import train
from lungjax.data import loading
from tests.conftest import write_image_folder


@pytest.fixture(scope='module')
def one_epoch_run(tmp_path_factory):
  """(config, workdir, summary) of one epoch of the tiny config on 8 images per class (+ 2 per class in test/)."""
  root = str(tmp_path_factory.mktemp('one epoch data'))
  write_image_folder(os.path.join(root, 'train'), 8, seed=0)
  write_image_folder(os.path.join(root, 'test'), 2, seed=1)
  config = tiny.get_config()
  config.data.root = root
  config.train.num_epochs = 1
  workdir = str(tmp_path_factory.mktemp('one epoch run'))
  return config, workdir, train.train_and_evaluate(config, workdir)


def test_one_epoch_trains_its_steps_on_a_disjoint_split_and_keeps_the_run_files(one_epoch_run):
  config, workdir, summary = one_epoch_run
  assert summary['n_train'] + summary['n_val'] == 24 and summary['n_val'] > 0
  assert summary['num_steps'] == summary['steps_per_epoch'] == summary['n_train'] // config.train.batch_size
  (row,) = summary['history']
  assert row['epoch'] == 1 and row['step'] == summary['num_steps'] and np.isfinite(row['train_loss'])
  assert 0 < summary['best_step'] <= summary['num_steps']
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(summary['best_step'])))
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['name'] == 'tiny'
  kept = loading.load_training_thumbnails(loading.training_thumbnails_path(workdir))
  assert len(kept.paths) == 24 and len(set(kept.pixel_hashes)) == 24
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(workdir))
