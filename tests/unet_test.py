"""models/unet.py: the lung U-Net's logits per pixel at the input's size, grey input, its side and class checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lungjax.models.unet import UNet


def _init(model, images):
  return model.init(jax.random.PRNGKey(0), images)


@pytest.mark.parametrize('downsample', [1, 2])
def test_one_float32_logit_per_pixel_at_the_input_size(downsample):
  model = UNet(features=(4, 8), downsample=downsample)
  images = np.random.default_rng(0).integers(0, 256, (2, 16, 24, 3), np.uint8)
  variables = _init(model, images)
  logits = model.apply(variables, images)
  assert logits.shape == (2, 16, 24) and logits.dtype == jnp.float32
  assert float(jnp.std(logits)) > 0  # Not a constant map.
  params = variables['params']
  assert params['Conv_0']['kernel'].shape[2] == 1  # It reads one grey channel.


def test_rgb_and_grey_of_the_channel_mean_give_the_same_logits():
  model = UNet(features=(4, 8), downsample=1)
  grey = np.random.default_rng(1).integers(0, 256, (1, 8, 8, 1), np.uint8)
  variables = _init(model, grey)
  rgb = np.repeat(grey, 3, axis=-1)
  np.testing.assert_allclose(model.apply(variables, rgb), model.apply(variables, grey), atol=1e-6)


def test_bad_sides_and_class_counts_are_refused():
  with pytest.raises(ValueError, match=r'divisible by 4, got 10x8'):
    _init(UNet(features=(4, 8), downsample=2), np.zeros((1, 10, 8, 1), np.uint8))
  with pytest.raises(ValueError, match='num_classes must be 1, got 3'):
    _init(UNet(num_classes=3, features=(4,), downsample=1), np.zeros((1, 8, 8, 1), np.uint8))
