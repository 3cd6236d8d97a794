"""Augmentation aimed at sources (lungjax/data/augment.py; issue 23 part 4): each op changes what it should, and only
when its probability says so."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cnn
from lungjax.data import augment, pipeline
from lungjax.runtime import run_fields


def _only(field: str, **ranges) -> augment.AugmentSettings:
  """Every op off but `field`'s (probability 1), with the default ranges unless given."""
  config = cnn.get_config().augment
  config.enabled = True
  for name, value in ranges.items():
    config[name] = value
  return augment.only_op(augment.augment_settings(config), field)


def _grey(batch=4, size=32, seed=0) -> np.ndarray:
  smooth = np.random.default_rng(seed).integers(40, 200, (batch, size // 4, size // 4))
  grey = np.repeat(np.repeat(smooth, 4, axis=1), 4, axis=2).astype(np.uint8)
  return np.repeat(grey[..., None], 3, axis=-1)


def _apply(settings, images, seed=0) -> np.ndarray:
  return np.asarray(augment.augment_batch(jnp.asarray(images), jax.random.PRNGKey(seed), settings))


def test_source_ops_are_off_by_default_and_old_configs_read_them_as_off():
  config = cnn.get_config().augment
  config.enabled = True
  settings = augment.augment_settings(config)
  assert all(getattr(settings, f) == 0.0 for _, f in augment.OP_ROWS if f not in ('rotation_prob', 'contrast_prob'))
  source_fields = ('crop_prob', 'crop_scale', 'crop_ratio', 'gamma_prob', 'gamma_range', 'resolution_prob',
                   'resolution_factors', 'blur_prob', 'blur_sigma', 'noise_prob', 'noise_std', 'pad_prob',
                   'pad_fraction', 'jpeg_prob', 'jpeg_quality')
  old = cnn.get_config().to_dict()  # A config.json saved before the source-aimed ops existed ...
  for field in source_fields:
    del old['augment'][field]
  with pytest.raises(ValueError, match=r'config.augment: missing fields \[.crop_prob'):
    augment.augment_settings(augment.ml_collections.ConfigDict(old['augment']))
  upgraded = augment.ml_collections.ConfigDict(run_fields.upgrade(old))  # ... reads them as off once upgraded.
  settings = augment.augment_settings(upgraded.augment)
  assert all(getattr(settings, f) == 0.0 for f in source_fields if f.endswith('_prob'))


def test_random_resized_crop_zooms_into_part_of_the_image():
  images = np.zeros((1, 32, 32, 3), np.uint8)
  images[:, 15:17, 15:17] = 255  # A 2x2 dot in the middle.
  out = _apply(_only('crop_prob', crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0)), images)
  assert (out[0, ..., 0] > 100).sum() >= 12  # A quarter of the area blown up to the whole: the dot ~4x wider.
  whole = _apply(_only('crop_prob', crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0)), images)
  np.testing.assert_array_equal(whole, images)  # Scale 1: the identity.


def test_gamma_darkens_midtones_and_keeps_black_and_white():
  images = np.broadcast_to(np.asarray([0, 128, 255], np.uint8)[None, None, :, None], (2, 1, 3, 3)).copy()
  out = _apply(_only('gamma_prob', gamma_range=(2.0, 2.0)), images)
  assert out[0, 0, :, 0].tolist() == [0, 64, 255]


def test_resolution_jitter_removes_fine_detail():
  checker = ((np.indices((32, 32)).sum(axis=0) % 2) * 255).astype(np.uint8)
  images = np.repeat(checker[None, ..., None], 3, axis=-1)
  out = _apply(_only('resolution_prob', resolution_factors=(0.25,)), images)
  assert out.std() < 0.2 * images.std()
  assert out.shape == images.shape


def test_blur_smooths_an_edge_by_its_sigma():
  images = np.zeros((1, 16, 16, 3), np.uint8)
  images[:, :, 8:] = 200
  soft = _apply(_only('blur_prob', blur_sigma=(1.5, 1.5)), images)[0, 8, :, 0]
  assert 0 < soft[7] < 100 < soft[8] < 200 and soft[5] > 0
  none = _apply(_only('blur_prob', blur_sigma=(0.0, 0.0)), images)
  np.testing.assert_array_equal(none, images)


def test_noise_has_its_standard_deviation_and_keeps_grey_images_grey():
  images = np.full((2, 32, 32, 3), 128, np.uint8)
  out = _apply(_only('noise_prob', noise_std=(0.05, 0.05)), images).astype(np.float32)
  assert 0.04 * 255 < out.std() < 0.06 * 255
  assert (out[..., 0] == out[..., 2]).all()


def test_border_padding_frames_the_shrunk_image_with_one_grey():
  images = np.full((1, 40, 40, 3), 200, np.uint8)
  out = _apply(_only('pad_prob', pad_fraction=(0.1, 0.1)), images)[0, ..., 0]
  fill = out[0, 0]
  assert (out[:4] == fill).all() and (out[-4:] == fill).all() and (out[:, :4] == fill).all()
  assert (out[5:-5, 5:-5] == 200).all()  # The image itself, shrunk: no dark seam creeps in.


def test_jpeg_reencoding_runs_on_the_host_seeded_and_degrades():
  rng = np.random.default_rng(0)
  images = np.repeat(rng.integers(0, 256, (3, 32, 32, 1), np.uint8), 3, axis=-1)
  fn = augment.JpegReencode(1.0, (10.0, 10.0))
  out = fn({'image': images, 'label': np.zeros(3)}, np.random.default_rng(1))['image']
  assert np.abs(out.astype(np.float32) - images).mean() > 10
  assert (out[..., 0] == out[..., 1]).all()  # Grey stays grey.
  again = fn({'image': images}, np.random.default_rng(1))['image']
  np.testing.assert_array_equal(out, again)
  assert augment.make_augment_fn(augment.ml_collections.ConfigDict(
      {**cnn.get_config().augment.to_dict(), 'enabled': True, 'rotation_prob': 0.0, 'zoom_prob': 0.0,
       'shift_prob': 0.0, 'brightness_prob': 0.0, 'contrast_prob': 0.0, 'jpeg_prob': 1.0})) is not None
  assert _only('jpeg_prob').is_identity  # Nothing for the device to do.


def test_the_training_pipeline_reencodes_with_the_same_draws_per_batch():
  images = np.repeat(np.random.default_rng(2).integers(0, 256, (8, 16, 16, 1), np.uint8), 3, axis=-1)
  labels = np.zeros(8, np.int32)
  host = augment.JpegReencode(1.0, (10.0, 30.0))
  dataset = pipeline.train_dataset(images, labels, global_batch_size=4, num_epochs=2, seed=0, host_augment=host)
  plain = pipeline.train_dataset(images, labels, global_batch_size=4, num_epochs=2, seed=0)
  assert not np.array_equal(dataset[0]['image'], plain[0]['image'])
  np.testing.assert_array_equal(dataset[3]['image'], dataset[3]['image'])


@pytest.mark.parametrize('field, value', [('crop_scale', (0.0, 1.0)), ('blur_sigma', (0.5, 9.0)),
                                          ('pad_fraction', (0.0, 0.6)), ('jpeg_quality', (0.0, 90.0)),
                                          ('resolution_factors', (0.5, 1.5)), ('gamma_prob', 2.0)])
def test_bad_values_name_the_field(field, value):
  config = cnn.get_config().augment.to_dict()
  config[field] = value
  with pytest.raises(ValueError, match=f'config.augment.{field}'):
    augment.augment_settings(augment.ml_collections.ConfigDict(config))


def test_everything_on_keeps_shape_dtype_and_range():
  config = cnn.get_config().augment
  config.enabled = True
  for _, field in augment.OP_ROWS:
    config[field] = 1.0
  out = augment.make_augment_fn(config)(jnp.asarray(_grey()), jax.random.PRNGKey(0))
  assert out.shape == (4, 32, 32, 3) and out.dtype == jnp.uint8
