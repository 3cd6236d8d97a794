"""The model registry and the study's CNN."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import cnn
from lungjax.models import create_model


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


def test_unknown_model_or_field_names_the_config_field():
  with pytest.raises(ValueError, match='config.model.name'):
    create_model(ml_collections.ConfigDict({'name': 'transformer'}), 3)
  with pytest.raises(ValueError, match='widht'):
    create_model(ml_collections.ConfigDict({'name': 'cnn', 'widht': 3}), 3)
