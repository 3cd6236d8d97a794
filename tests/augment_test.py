"""On-device augmentation: seeded, per example, dtype-preserving, geometrically right, and its grid command."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import cnn, cnn_augment
from lungjax.data import augment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OPS = ('rotation', 'zoom', 'shift', 'hflip', 'brightness', 'contrast')


def _only(**fields):
  """cnn_augment's augment config with every probability 0, then `fields` set."""
  config = cnn_augment.get_config().augment
  for op in _OPS:
    config[f'{op}_prob'] = 0.0
  for name, value in fields.items():
    config[name] = value
  return config


def _noise_batch(batch=4, size=32, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), np.uint8)


def test_configs_keep_augmentation_off_and_flips_off():
  assert augment.make_augment_fn(cnn.get_config().augment) is None
  config = cnn_augment.get_config()
  assert config.name == 'cnn_augment' and config.augment.enabled and config.augment.hflip_prob == 0.0
  settings = augment.augment_settings(config.augment)
  assert settings.rotation_prob > 0 and settings.zoom_prob > 0 and settings.shift_prob > 0
  assert settings.brightness_prob > 0 and settings.contrast_prob > 0


def test_same_key_same_batch_and_other_key_other_batch():
  fn = augment.make_augment_fn(cnn_augment.get_config().augment)
  images = jnp.asarray(_noise_batch(8))
  first = np.asarray(fn(images, jax.random.PRNGKey(1)))
  np.testing.assert_array_equal(first, np.asarray(fn(images, jax.random.PRNGKey(1))))
  assert not np.array_equal(first, np.asarray(fn(images, jax.random.PRNGKey(2))))
  assert not np.array_equal(first, np.asarray(images))


def test_each_example_draws_its_own_parameters():
  images = np.repeat(_noise_batch(1), 6, axis=0)
  out = np.asarray(augment.augment_batch(jnp.asarray(images), jax.random.PRNGKey(0),
                                         _only(rotation_prob=1.0, rotation_degrees=(-30.0, 30.0))))
  assert len({out[i].tobytes() for i in range(6)}) == 6


@pytest.mark.parametrize('config', [
    _only(),
    _only(enabled=False, rotation_prob=1.0, brightness_prob=1.0),
    # Every op fires but with neutral values: the warp itself must not blur.
    _only(rotation_prob=1.0, rotation_degrees=(0.0, 0.0), zoom_prob=1.0, zoom_range=(1.0, 1.0), shift_prob=1.0,
          shift_fraction=(0.0, 0.0), brightness_prob=1.0, brightness_delta=(0.0, 0.0), contrast_prob=1.0,
          contrast_range=(1.0, 1.0)),
])
def test_nothing_to_do_is_the_identity(config):
  images = _noise_batch()
  out = augment.augment_batch(jnp.asarray(images), jax.random.PRNGKey(3), config)
  assert out.dtype == jnp.uint8
  np.testing.assert_array_equal(np.asarray(out), images)


@pytest.mark.parametrize('dtype', [jnp.uint8, jnp.float32])
def test_dtype_shape_and_range_are_kept(dtype):
  config = cnn_augment.get_config().augment
  config.brightness_prob, config.brightness_delta = 1.0, (0.5, 0.9)  # Pushes far past 255: must clip.
  images = jnp.asarray(_noise_batch(4, 24)).astype(dtype)
  out = augment.make_augment_fn(config)(images, jax.random.PRNGKey(0))
  assert out.shape == images.shape and out.dtype == dtype
  assert float(out.min()) >= 0 and float(out.max()) <= 255
  if dtype == jnp.float32:
    assert not np.all(np.asarray(out) == np.round(np.asarray(out)))  # Float stays unrounded.


def test_rotating_90_degrees_moves_a_top_bar_to_the_left_side():
  images = np.zeros((2, 32, 32, 3), np.uint8)
  images[:, :4] = 200  # A bright bar along the top.
  out = np.asarray(augment.augment_batch(jnp.asarray(images), jax.random.PRNGKey(0),
                                         _only(rotation_prob=1.0, rotation_degrees=(90.0, 90.0))))
  expected = np.zeros_like(images)
  expected[:, :, :4] = 200  # Counter-clockwise: the top goes to the left.
  np.testing.assert_array_equal(out, expected)


def test_shift_moves_a_square_by_the_fraction_of_the_size():
  images = np.zeros((1, 32, 32, 3), np.uint8)
  images[:, 4:8, 10:14] = 255
  out = np.asarray(augment.augment_batch(jnp.asarray(images), jax.random.PRNGKey(0),
                                         _only(shift_prob=1.0, shift_fraction=(0.25, 0.25))))
  expected = np.zeros_like(images)
  expected[:, 12:16, 18:22] = 255  # 0.25 x 32 = 8 pixels down and right.
  np.testing.assert_array_equal(out, expected)


def test_half_pixel_shift_interpolates_bilinearly():
  images = np.zeros((1, 32, 32, 3), np.uint8)
  images[:, 10, 10] = 200
  out = np.asarray(augment.augment_batch(jnp.asarray(images), jax.random.PRNGKey(0),
                                         _only(shift_prob=1.0, shift_fraction=(1 / 64, 1 / 64))))
  expected = np.zeros_like(images)
  expected[:, 10:12, 10:12] = 50  # Half a pixel down and right: a quarter of the dot in each of four pixels.
  np.testing.assert_array_equal(out, expected)


def test_zoom_scales_a_centred_square_and_fills_black():
  images = np.zeros((1, 32, 32, 3), np.uint8)
  images[:, 12:20, 12:20] = 255
  zoomed_in = np.asarray(augment.augment_batch(jnp.asarray(images), jax.random.PRNGKey(0),
                                               _only(zoom_prob=1.0, zoom_range=(2.0, 2.0))))
  assert (zoomed_in[0, :, :, 0] > 127).sum() == 16 * 16
  assert zoomed_in[0, 16, 16, 0] == 255
  zoomed_out = np.asarray(augment.augment_batch(jnp.asarray(np.full_like(images, 255)), jax.random.PRNGKey(0),
                                                _only(zoom_prob=1.0, zoom_range=(0.5, 0.5))))
  assert zoomed_out[0, 0, 0, 0] == 0 and zoomed_out[0, 16, 16, 0] == 255  # Black border, image in the middle.


def test_horizontal_flip_mirrors_columns():
  images = _noise_batch(2)
  out = augment.augment_batch(jnp.asarray(images), jax.random.PRNGKey(0), _only(hflip_prob=1.0))
  np.testing.assert_array_equal(np.asarray(out), images[:, :, ::-1])


def test_brightness_adds_its_delta_and_clips():
  images = np.asarray([100, 250], np.uint8).reshape(1, 1, 2, 1).repeat(3, axis=-1)
  config = _only(brightness_prob=1.0, brightness_delta=(0.2, 0.2))
  out = np.asarray(augment.augment_batch(jnp.asarray(images), jax.random.PRNGKey(0), config))
  np.testing.assert_array_equal(out[0, 0, :, 0], [151, 255])  # 0.2 x 255 = 51 added.
  floats = augment.augment_batch(jnp.asarray(images, jnp.float32), jax.random.PRNGKey(0), config)
  np.testing.assert_allclose(np.asarray(floats)[0, 0, :, 0], [151.0, 255.0], atol=1e-4)
  rounded = augment.augment_batch(jnp.asarray(images), jax.random.PRNGKey(0),
                                  _only(brightness_prob=1.0, brightness_delta=(0.01, 0.01)))
  np.testing.assert_array_equal(np.asarray(rounded)[0, 0, :, 0], [103, 253])  # 2.55 added, rounded.


def test_contrast_scales_about_the_image_mean():
  images = np.asarray([100, 150], np.uint8).reshape(1, 1, 2, 1).repeat(3, axis=-1)
  out = augment.augment_batch(jnp.asarray(images), jax.random.PRNGKey(0),
                              _only(contrast_prob=1.0, contrast_range=(2.0, 2.0)))
  np.testing.assert_array_equal(np.asarray(out)[0, 0, :, 0], [75, 175])  # Mean 125, distances doubled.


def test_probability_picks_which_examples_change():
  images = np.repeat(_noise_batch(1), 64, axis=0)
  out = np.asarray(augment.augment_batch(jnp.asarray(images), jax.random.PRNGKey(0),
                                         _only(brightness_prob=0.5, brightness_delta=(0.3, 0.3))))
  changed = np.any(out != images, axis=(1, 2, 3)).sum()
  assert 16 < changed < 48


def test_jit_compiles_once_for_repeated_calls():
  fn = augment.make_augment_fn(cnn_augment.get_config().augment)
  images = jnp.asarray(_noise_batch())
  for seed in range(3):
    fn(images, jax.random.fold_in(jax.random.PRNGKey(0), seed)).block_until_ready()
  assert fn._cache_size() == 1  # pylint: disable=protected-access


@pytest.mark.parametrize('field, value', [('rotation_prob', 1.5), ('zoom_range', (0.0, 1.1)),
                                          ('shift_fraction', (0.2, 0.1)), ('contrast_range', 0.9)])
def test_bad_values_name_the_field(field, value):
  config = cnn_augment.get_config().augment.to_dict()
  config[field] = value
  with pytest.raises(ValueError, match=f'config.augment.{field}'):
    augment.make_augment_fn(augment.ml_collections.ConfigDict(config))


def test_rejects_integer_images_other_than_uint8():
  with pytest.raises(ValueError, match='uint8 or float'):
    augment.augment_batch(jnp.zeros((1, 8, 8, 3), jnp.int32), jax.random.PRNGKey(0), cnn_augment.get_config().augment)


_SHARDED_SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    from configs import cnn_augment
    from lungjax.data import augment
    from lungjax.runtime import mesh as mesh_lib
    assert jax.device_count() == 4, jax.devices()
    fn = augment.make_augment_fn(cnn_augment.get_config().augment)
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), np.uint8)
    mesh = mesh_lib.make_mesh()

    def step(images, key, step):  # As the train step will call it.
      return fn(images, jax.random.fold_in(key, step))

    sharded = jax.jit(step, in_shardings=(mesh_lib.batch_sharded(mesh), None, None),
                      out_shardings=mesh_lib.batch_sharded(mesh))
    batch = mesh_lib.to_global_batch({'image': images}, mesh_lib.batch_sharded(mesh))['image']
    out = sharded(batch, jax.random.PRNGKey(0), 3)
    assert len(out.sharding.device_set) == 4
    single = jax.jit(step)(jax.device_put(images, jax.devices()[0]), jax.random.PRNGKey(0), 3)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(single))
    assert not np.array_equal(np.asarray(out), images)
    print('sharded ok')
''')


def test_sharded_batch_under_jit_matches_one_device():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4', JAX_PLATFORMS='cpu',
             PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, '-c', _SHARDED_SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'sharded ok' in result.stdout


def test_grid_figure_shows_the_batch_before_and_after_with_class_names():
  images = _noise_batch(5, 16)
  fig = augment.grid_figure(images, images[::-1], np.array([0, 1, 2, 0, 1]), ('Covid', 'Normal', 'Viral Pneumonia'),
                            'title', columns=3)
  drawn = [ax for ax in fig.axes if ax.images]
  assert len(drawn) == 10
  assert [ax.get_title() for ax in drawn] == ['Covid', 'Normal', 'Viral Pneumonia', 'Covid', 'Normal'] * 2
  np.testing.assert_array_equal(drawn[0].images[0].get_array(), images[0])
  np.testing.assert_array_equal(drawn[5].images[0].get_array(), images[4])  # The after half starts again.
  augment.plt.close(fig)


def _run_grid(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  return subprocess.run([sys.executable, '-m', 'lungjax.data.augment', '--config=configs/tiny.py', *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)


def test_grid_command_writes_a_png_without_metadata(tmp_path, synthetic_root):
  out = str(tmp_path / 'grid dir' / 'grid.png')
  result = _run_grid(f'--config.data.root={synthetic_root}', '--config.augment.enabled=True', f'--out={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert os.path.abspath(out) in result.stdout
  with Image.open(out) as png:
    assert png.format == 'PNG' and png.size[1] > png.size[0] / 3
    assert not png.text and 'Software' not in png.info


def test_grid_command_needs_augmentation_enabled(tmp_path, synthetic_root):
  result = _run_grid(f'--config.data.root={synthetic_root}', f'--out={tmp_path / "grid.png"}')
  assert result.returncode != 0
  assert 'config.augment.enabled' in result.stderr
