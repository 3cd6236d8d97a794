"""Checkpoints: a round trip restores exactly, and an interrupted run resumes to the same parameters."""

import os
import shutil

import jax
import numpy as np
import pytest

from lungjax import checkpoints, mesh as mesh_lib, steps, train
from lungjax.data import pipeline
from lungjax.models import create_model


def _params_of(workdir: str, config, step: int):
  model = create_model(config.model, 3)
  abstract = steps.abstract_train_state(model, steps.create_optimizer(config.train), config.data.image_size,
                                        mesh_lib.make_mesh())
  manager = checkpoints.create_manager(workdir, config.checkpoint, read_only=True)
  state = checkpoints.restore_state(manager, step, abstract)
  manager.close()
  return jax.device_get(state)


def test_round_trip_restores_state_iterator_and_history(tmp_path, tiny_config):
  model = create_model(tiny_config.model, 3)
  tx = steps.create_optimizer(tiny_config.train)
  mesh = mesh_lib.make_mesh()
  state = steps.jit_create_train_state(model, tx, 32, mesh)(jax.random.PRNGKey(3))
  state = state.replace(step=state.step + 7)
  images = np.arange(12, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
  dataset = pipeline.train_dataset(images, np.zeros(12, np.int32), global_batch_size=4, num_epochs=2, seed=0)
  data_iter = iter(dataset.to_iter_dataset())
  next(data_iter)
  expected_next = dataset[1]  # The batch that follows the first.
  saved = jax.device_get(state)
  manager = checkpoints.create_manager(str(tmp_path), tiny_config.checkpoint)
  checkpoints.save(manager, state, data_iter, [{'epoch': 1, 'train_loss': 0.5}], {'val_macro_recall': 0.5})
  manager.wait_until_finished()
  fresh_iter = iter(dataset.to_iter_dataset())
  abstract = steps.abstract_train_state(model, tx, 32, mesh)
  restored, history = checkpoints.restore_for_training(manager, 7, abstract, fresh_iter)
  manager.close()
  assert history == [{'epoch': 1, 'train_loss': 0.5}]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), saved)
  np.testing.assert_array_equal(next(fresh_iter)['image'], expected_next['image'])


def test_eval_step_request_that_does_not_exist_names_the_field(tmp_path, tiny_config):
  manager = checkpoints.create_manager(str(tmp_path), tiny_config.checkpoint)
  with pytest.raises(FileNotFoundError, match='train first'):
    checkpoints.choose_step(manager, -1, str(tmp_path))


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_parameters(tmp_path, tiny_config):
  tiny_config.checkpoint.keep_latest = 2
  tiny_config.train.num_epochs = 3
  straight, interrupted = str(tmp_path / 'straight'), str(tmp_path / 'interrupted')
  summary = train.train_and_evaluate(tiny_config, straight)
  last = summary['num_steps']
  train.train_and_evaluate(tiny_config, interrupted)
  # Pretend the run died during its last epoch: drop the last checkpoint, keep the one before.
  shutil.rmtree(os.path.join(checkpoints.checkpoint_dir(interrupted), str(last)))
  resumed = train.train_and_evaluate(tiny_config, interrupted)
  assert resumed['first_step_this_run'] == last - summary['steps_per_epoch']
  assert [row['train_loss'] for row in resumed['history']] == [row['train_loss'] for row in summary['history']]
  jax.tree.map(np.testing.assert_array_equal, _params_of(interrupted, tiny_config, last).params,
               _params_of(straight, tiny_config, last).params)
