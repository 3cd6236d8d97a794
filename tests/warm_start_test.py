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
