"""The model registry (models/__init__.py): names, fields, dtypes (the CNN itself: models_cnn_test)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import cnn
from lungjax.models import create_model


def test_unknown_model_or_field_names_the_config_field():
  with pytest.raises(ValueError, match='config.model.name'):
    create_model(ml_collections.ConfigDict({'name': 'transformer'}), 3)
  with pytest.raises(ValueError, match='widht'):
    create_model(ml_collections.ConfigDict({'name': 'cnn', 'widht': 3}), 3)


def _small_model_configs():
  """One small config.model per registered model (and the autoencoder), at 32x32."""
  from configs import resnet, vgg  # pylint: disable=g-import-not-at-top
  small = cnn.get_config().model
  small.conv_features, small.dense_features = (4, 8, 8), (16, 16)
  res = resnet.get_config().model
  res.width = 4
  vg = vgg.get_config().model
  vg.depth, vg.width, vg.dense_features = 11, 4, (8,)
  return {'cnn': small, 'resnet': res, 'vgg': vg}


@pytest.mark.parametrize('name', ['cnn', pytest.param('resnet', marks=pytest.mark.slow), 'vgg', 'autoencoder'])
def test_bfloat16_compute_keeps_float32_params_and_outputs_close_to_float32(name):
  from lungjax import autoencoder  # pylint: disable=g-import-not-at-top
  images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8)
  outputs = {}
  for dtype in ('float32', 'bfloat16'):
    if name == 'autoencoder':
      config = cnn.get_config()
      config.model.conv_features, config.model.dtype = (4, 8, 8), dtype
      model = autoencoder.create_model(config)
      variables = model.init(jax.random.PRNGKey(0), images)
      apply = lambda variables, model=model: model.apply(variables, images)
    else:
      config_model = _small_model_configs()[name]
      config_model.dtype = dtype
      model = create_model(config_model, 3)
      variables = model.init(jax.random.PRNGKey(0), images, train=False)
      apply = lambda variables, model=model: model.apply(variables, images, train=False)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables)), dtype
    outputs[dtype] = jax.jit(apply)(variables)
    assert outputs[dtype].dtype == jnp.float32
  # Same initial params (same key, float32), bfloat16's ~3 significant digits: loose agreement.
  scale = float(np.max(np.abs(outputs['float32']))) + 1e-3
  np.testing.assert_allclose(outputs['bfloat16'], outputs['float32'], atol=0.05 * scale + 0.02)


@pytest.mark.slow
def test_bfloat16_train_step_follows_float32_and_keeps_float32_params():
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from lungjax import steps  # pylint: disable=g-import-not-at-top
  from lungjax.runtime import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from tests.conftest import striped_image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  labels = np.arange(12, dtype=np.int32) % 3
  images = np.stack([np.asarray(jax.image.resize(striped_image(int(c), rng), (32, 32, 3), 'linear'))
                     for c in labels]).astype(np.uint8)
  mesh = mesh_lib.make_mesh()
  batch = mesh_lib.to_global_batch({'image': images, 'label': labels}, mesh_lib.batch_sharded(mesh))
  losses = {}
  for dtype in ('float32', 'bfloat16'):
    config = tiny.get_config()
    config.model.dtype, config.train.learning_rate = dtype, 3e-3
    model = create_model(config.model, 3)
    tx = steps.create_optimizer(config.train)
    state = steps.jit_create_train_state(model, tx, 32, mesh)(jax.random.PRNGKey(0))
    train_step = steps.jit_train_step(model, tx, np.ones(3, np.float32), mesh)
    losses[dtype] = []
    for _ in range(30):
      state, metrics = train_step(state, batch)
      losses[dtype].append(float(metrics.compute()['loss']))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((state.params, state.opt_state)) if x.ndim)
  assert losses['bfloat16'][-1] < 0.5 * losses['bfloat16'][0], losses
  np.testing.assert_allclose(losses['bfloat16'][:5], losses['float32'][:5], atol=0.05)


def test_the_lung_unet_is_a_segmentation_model_not_a_classifier_name():
  import jax
  import jax.numpy as jnp
  from lungjax.models import MODELS, SEGMENTATION_MODELS
  assert 'unet' not in MODELS
  model = SEGMENTATION_MODELS['unet']()
  images_BHWC = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.uint8)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), images_BHWC)
  logits = jax.eval_shape(lambda v, x: model.apply(v, x), variables, images_BHWC)
  assert (logits.shape, logits.dtype) == ((2, 64, 64), jnp.float32)
