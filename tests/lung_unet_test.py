"""models/lung_unet.py: masks of decoded pixels, the same as lungjax.lungs' of the same film; odd modes refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from lungjax import lungs
from lungjax.models import lung_unet
from lungjax.models.unet import UNet


def _tiny_model(size=32):
  module = UNet(features=(4, 8), downsample=2)
  params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 1), jnp.uint8))['params']
  return lung_unet.LungModel(module, params, size, {})


def test_decoded_pixels_give_the_masks_of_the_api():
  model = _tiny_model()
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
  core = lung_unet.lung_mask_of(Image.fromarray(rgb), model)
  assert core.shape == (40, 56) and core.dtype == bool
  np.testing.assert_array_equal(core, lungs.lung_mask_of(Image.fromarray(rgb), model))
  np.testing.assert_array_equal(core, lung_unet.lung_mask_of(rgb, model))
  logits = model.logits(lung_unet.model_input(rgb, 32)[None])[0]
  np.testing.assert_array_equal(core, lung_unet.upsample_logits(logits, 40, 56) > 0)


def test_other_modes_and_dtypes_are_refused_by_name():
  with pytest.raises(ValueError, match="mode 'RGBA'"):
    lung_unet.decoded_pixels(Image.new('RGBA', (8, 8)))
  with pytest.raises(ValueError, match='uint8'):
    lung_unet.decoded_pixels(np.zeros((8, 8), np.float32))
  assert lungs.WEIGHTS_PATH == lung_unet.WEIGHTS_PATH and lungs.load_lungs is lung_unet.load_lungs
