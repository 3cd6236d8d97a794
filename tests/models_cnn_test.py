"""models/cnn.py: the study's CNN (its parameter count, pixel rescaling, logits, dropout, the gap head's shape)."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import cnn
from lungjax.models import create_model
from lungjax.models.cnn import CNN


def test_study_cnn_has_the_studys_parameter_count():
  model = create_model(cnn.get_config().model, 3)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 256, 256, 3), jnp.uint8),
                                                train=False))
  assert sum(x.size for x in jax.tree.leaves(variables)) == 16_887_491


def test_cnn_rescales_pixels_and_outputs_logits():
  config = cnn.get_config().model
  config.conv_features, config.dense_features = (4, 4, 4), (8, 8)
  model = create_model(config, 3)
  images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8)
  params = model.init(jax.random.PRNGKey(0), images, train=False)
  logits = model.apply(params, images, train=False)
  assert logits.shape == (2, 3)
  np.testing.assert_allclose(logits, model.apply(params, images.astype(np.float32), train=False), atol=1e-6)
  dropped = model.apply(params, images, train=True, rngs={'dropout': jax.random.PRNGKey(1)})
  assert not np.allclose(dropped, logits)


def test_the_conv_stack_halves_the_side_per_layer_and_names_its_convs_like_keras_order():
  model = CNN(num_classes=3, conv_features=(4, 6), dense_features=(8,))
  images = np.zeros((1, 16, 16, 3), np.uint8)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, train=False))['params']
  assert params['Conv_0']['kernel'].shape == (3, 3, 3, 4) and params['Conv_1']['kernel'].shape == (3, 3, 4, 6)
  flat = 16 // 2 // 2
  dense = [k for k in params if k.startswith('Dense')]
  assert params[dense[0]]['kernel'].shape[0] == flat * flat * 6  # Flatten head: (16 / 2^2)^2 x 6 features.
  assert params[dense[-1]]['kernel'].shape[-1] == 3
