"""Warm starts: a Keras weights file loaded into training, and frozen backbones that do not move."""

import os

os.environ.setdefault('KERAS_BACKEND', 'tensorflow')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax  # pylint: disable=g-import-not-at-top
import numpy as np
import pytest

from configs import vgg
from lungjax import steps
from lungjax.runtime import mesh as mesh_lib
from lungjax.models import create_model, warm_start
from tests.steps_test import _batch


@pytest.mark.slow
def test_keras_file_is_loaded_and_backbone_frozen(tmp_path):
  keras = pytest.importorskip('keras')
  keras_model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
  path = str(tmp_path / 'vgg16.weights.h5')
  keras_model.save_weights(path)
  config = vgg.get_config()
  config.data.image_size = 32
  config.model.preprocessing = 'caffe'
  config.model.init_from = path
  config.train.freeze_backbone_epochs = 1
  model = create_model(config.model, 3)
  tx = steps.create_optimizer(config.train)
  mesh = mesh_lib.make_mesh()
  fresh = steps.jit_create_train_state(model, tx, 32, mesh)(jax.random.PRNGKey(0))
  state = warm_start.warm_start(config, str(tmp_path), fresh, tx)
  keras_kernel = keras_model.get_layer('block1_conv1').get_weights()[0]
  np.testing.assert_array_equal(np.asarray(state.params['block1']['conv1']['kernel']), keras_kernel)
  assert 'loaded' in open(tmp_path / 'warm_start.txt').read()
  mask, freeze_steps = warm_start.frozen_parameters(config, state.params, steps_per_epoch=2)
  assert freeze_steps == 2
  train_step = steps.jit_train_step(model, tx, np.ones(3, np.float32), mesh, frozen_mask=mask,
                                    freeze_steps=freeze_steps)
  batch = mesh_lib.to_global_batch(_batch(4), mesh_lib.batch_sharded(mesh))
  before = jax.device_get(state.params)
  for _ in range(2):
    state, _ = train_step(state, batch)
  frozen = jax.device_get(state.params)
  np.testing.assert_array_equal(frozen['block1']['conv1']['kernel'], before['block1']['conv1']['kernel'])
  assert not np.array_equal(frozen['head']['kernel'], before['head']['kernel'])
  state, _ = train_step(state, batch)  # Step 3: the backbone trains again.
  assert not np.array_equal(np.asarray(state.params['block1']['conv1']['kernel']), before['block1']['conv1']['kernel'])


def test_initial_state_is_fresh_then_resumes_this_runs_checkpoint(tiny_config, tmp_path):
  """initial_state: a fresh state (step 0, no history, seeded) in an empty workdir; after a save, the saved step with
  its history and the data iterator's position restored in place."""
  from lungjax import checkpoints  # pylint: disable=g-import-not-at-top
  from lungjax.data import batches, loading  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  mesh = mesh_lib.make_mesh()
  data = loading.load_training_data(tiny_config)

  def start():
    made = batches.training_batches(tiny_config, data)
    return made, warm_start.initial_state(tiny_config, workdir, data, made.data_iter, made.num_steps,
                                          made.num_threads, mesh, stop=None)

  made, fresh = start()
  assert fresh.resumed_step is None and fresh.history == [] and int(fresh.state.step) == 0
  assert fresh.fingerprint and jax.tree.structure(fresh.abstract.params) == jax.tree.structure(fresh.state.params)
  again = steps.jit_create_train_state(fresh.model, fresh.tx, tiny_config.data.image_size, mesh)(
      jax.random.PRNGKey(tiny_config.seed))
  for a, b in zip(jax.tree.leaves(fresh.state.params), jax.tree.leaves(again.params)):  # Seeded by config.seed.
    np.testing.assert_array_equal(a, b)
  next(made.data_iter)
  moved = fresh.state.replace(step=fresh.state.step + 1)
  checkpoints.save(fresh.manager, moved, made.data_iter, [{'epoch': 0, 'step': 1}], None, fresh.fingerprint)
  fresh.manager.wait_until_finished()
  fresh.manager.close()
  made, resumed = start()
  assert resumed.resumed_step == 1 and int(resumed.state.step) == 1 and resumed.history == [{'epoch': 0, 'step': 1}]
  assert made.data_iter.get_state() != batches.training_batches(tiny_config, data).data_iter.get_state()
  resumed.manager.close()
