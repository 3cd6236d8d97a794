"""models/autoencoder.py: the autoencoder's encoder names match the CNN's convs; reconstructions in [0, 1]."""

import jax
import numpy as np
import pytest

from lungjax.models.autoencoder import ConvAutoencoder, encoder_layer_names
from lungjax.models.cnn import CNN


def test_encoder_names_are_the_cnns_conv_names_and_shapes_so_weights_map_one_to_one():
  assert encoder_layer_names((4, 6, 8)) == ('Conv_0', 'Conv_1', 'Conv_2')
  images = np.zeros((1, 16, 16, 3), np.uint8)
  autoencoder = jax.eval_shape(lambda: ConvAutoencoder(conv_features=(4, 6)).init(jax.random.PRNGKey(0), images))
  cnn = jax.eval_shape(lambda: CNN(conv_features=(4, 6), dense_features=(8,)).init(jax.random.PRNGKey(0), images,
                                                                                  train=False))
  for name in encoder_layer_names((4, 6)):
    assert jax.tree.map(lambda x: x.shape, autoencoder['params'][name]) == \
        jax.tree.map(lambda x: x.shape, cnn['params'][name]), name


def test_reconstructions_have_the_input_shape_in_zero_one_and_read_uint8_like_float():
  model = ConvAutoencoder(conv_features=(4, 6))
  images = np.random.default_rng(0).integers(0, 256, (2, 16, 8, 3), np.uint8)
  variables = model.init(jax.random.PRNGKey(0), images)
  out = np.asarray(model.apply(variables, images))
  assert out.shape == images.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
  np.testing.assert_allclose(model.apply(variables, images.astype(np.float32)), out, atol=1e-6)
  assert out.std() > 0


def test_a_side_not_divisible_by_two_per_layer_names_the_image_size_field():
  with pytest.raises(ValueError, match=r'divisible by 4 .*got 12x10: change config.data.image_size'):
    ConvAutoencoder(conv_features=(4, 6)).init(jax.random.PRNGKey(0), np.zeros((1, 12, 10, 3), np.uint8))
