"""lungs.py: the lung U-Net's input, weights format (and the shipped weights), masks and the segment API."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from lungjax import lungs
from lungjax.models.unet import UNet

SIZE = 64


def _tiny_model(seed=0):
  module = UNet(features=(4, 8), downsample=2)
  params = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, SIZE, SIZE, 1), jnp.uint8))['params']
  return lungs.LungModel(module, params, SIZE, {})


def test_model_input_is_channel_mean_so_rgb_and_grey_give_the_same_mask():
  rng = np.random.default_rng(0)
  grey = rng.integers(0, 256, (50, 70), dtype=np.uint8)
  rgb = np.repeat(grey[..., None], 3, axis=-1)
  np.testing.assert_array_equal(lungs.model_input(grey, SIZE), lungs.model_input(rgb, SIZE))
  model = _tiny_model()
  np.testing.assert_array_equal(model.masks([grey])[0], model.masks([rgb])[0])
  assert model.masks([grey])[0].shape == (50, 70)


def test_float16_weights_round_trip_and_give_the_same_masks(tmp_path):
  model = _tiny_model(1)
  path = str(tmp_path / 'w.npz')
  lungs.save_weights(path, model.params, {'features': [4, 8], 'downsample': 2, 'size': SIZE})
  loaded = lungs.load_lungs(path)
  assert loaded.size == SIZE and loaded.module.features == (4, 8)
  for leaf in jax.tree.leaves(loaded.params):
    assert leaf.dtype == jnp.float32
  films = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
  a, b = model.logits(np.stack([lungs.model_input(f, SIZE) for f in films])), loaded.logits(
      np.stack([lungs.model_input(f, SIZE) for f in films]))
  np.testing.assert_allclose(a, b, atol=0.05)
  masks = lungs.lung_masks(films, loaded)
  assert masks.shape == (3, SIZE, SIZE) and masks.dtype == bool


def test_lung_masks_batches_like_one_at_a_time():
  model = _tiny_model(2)
  films = np.random.default_rng(1).integers(0, 256, (11, 40, 48, 3), dtype=np.uint8)  # More than one batch.
  together = lungs.lung_masks(films, model)
  for film, mask in zip(films, together):
    np.testing.assert_array_equal(model.masks([film])[0], mask)


def test_dice_and_iou():
  a = np.zeros((4, 4), bool)
  a[:2] = True
  b = np.zeros((4, 4), bool)
  b[1:3] = True
  assert lungs.dice(a, b) == pytest.approx(0.5)
  assert lungs.iou(a, b) == pytest.approx(1 / 3)


SHIPPED = os.path.isfile(lungs.WEIGHTS_PATH)


@pytest.mark.skipif(not SHIPPED, reason='the lung weights are not in this checkout')
def test_the_shipped_weights_load_and_are_float16_and_small():
  model = lungs.load_lungs()
  assert model.meta['dtype'] == 'float16' and model.size == 256
  with np.load(lungs.WEIGHTS_PATH) as data:
    assert all(data[k].dtype == np.float16 for k in data.files if k != lungs.META_KEY)
  assert os.path.getsize(lungs.WEIGHTS_PATH) < 5e6
  assert os.path.isfile(os.path.splitext(lungs.WEIGHTS_PATH)[0] + '.md')  # Its model card beside it.
  record = lungs.weights_record()
  assert len(record['sha256']) == 64 and record['features'] == list(model.module.features)
