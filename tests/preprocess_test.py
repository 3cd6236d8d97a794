"""Preprocessing that removes what tells sources apart (lungjax/data/preprocess.py; issue 23 part 2).

Each step has a test on a synthetic image that fails when the step does nothing; the last tests check that train,
eval and the Python API run the same function.
"""

import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from configs import tiny
from conftest import write_image_folder
from lungjax import config_check, inference, train
from lungjax.runtime import run_fields
from lungjax.data import folders, images, loading, preprocess

OFF = preprocess.PreprocessSettings()


def _settings(**fields) -> preprocess.PreprocessSettings:
  config = tiny.get_config()
  for key, value in fields.items():
    setattr(config.data.preprocess, key, value)
  return preprocess.settings_of(config)


def _scene(side: int, seed: int = 0) -> np.ndarray:
  """A smooth grey 'chest' (two dark ovals on a bright field) at `side` px, with fine noise."""
  rows, cols = np.mgrid[0:side, 0:side] / side
  lungs = (((rows - 0.5) / 0.3)**2 + ((np.abs(cols - 0.5) - 0.2) / 0.13)**2) < 1
  grey = 170 - 90 * lungs + np.random.default_rng(seed).normal(0, 12, (side, side))
  return np.clip(grey, 0, 255).astype(np.uint8)


def _transition_width(row: np.ndarray) -> int:
  """How many pixels of a dark-to-bright step lie strictly between its two levels (0 for a sharp edge)."""
  low, high = float(row.min()), float(row.max())
  return int(np.sum((row > low + 0.1 * (high - low)) & (row < high - 0.1 * (high - low))))


def test_every_step_off_is_the_plain_bilinear_resize():
  rgb = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
  image = Image.fromarray(rgb)
  expected = np.asarray(image.resize((32, 32), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(preprocess.preprocess_image(image, OFF, 32), expected)
  assert not OFF.active and OFF.describe() == 'none'


def test_working_resolution_sets_the_sharpness_of_every_source():
  step = np.zeros((512, 512), np.uint8)
  step[:, 256:] = 200  # A sharp edge: a high-resolution film.
  image = Image.fromarray(step)
  plain = preprocess.preprocess_image(image, _settings(crop_borders=False, window_percentiles=(0.0, 100.0)), 128)
  assert _transition_width(plain[64, :, 0]) <= 2
  worked = preprocess.preprocess_image(image, _settings(working_size=32), 128)
  assert _transition_width(worked[64, :, 0]) >= 4  # Through 32 px: the edge is as soft as a 32 px film's.
  assert (worked[..., 0] == worked[..., 2]).all()


def test_acquisition_resolution_blurs_like_a_coarse_film():
  step = np.zeros((256, 256), np.uint8)
  step[:, 128:] = 200
  sharp = preprocess.preprocess_image(Image.fromarray(step), _settings(working_size=128), 128)
  coarse = preprocess.preprocess_image(Image.fromarray(step), _settings(working_size=128, acquisition_size=16), 128)
  assert _transition_width(sharp[64, :, 0]) <= 1
  assert _transition_width(coarse[64, :, 0]) >= 6


def test_a_small_png_and_a_large_jpeg_of_one_scene_look_alike(tmp_path):
  large = _scene(2000)
  small = np.asarray(Image.fromarray(large).resize((224, 224), Image.Resampling.LANCZOS))
  Image.fromarray(large).save(tmp_path / 'large.jpg', quality=90)
  Image.fromarray(small).save(tmp_path / 'small.png')
  settings = _settings(working_size=128, acquisition_size=64)
  a = images.load_image(str(tmp_path / 'large.jpg'), 64, settings).pixels_HWC.astype(np.float32)
  b = images.load_image(str(tmp_path / 'small.png'), 64, settings).pixels_HWC.astype(np.float32)
  assert np.abs(a - b).mean() < 2.0


def test_borders_and_letterboxing_are_cropped():
  content = _scene(100)
  framed = np.zeros((140, 120), np.uint8)
  framed[20:120, 10:110] = content  # Black letterbox bars above and below, a black frame left and right.
  framed[:, 110:] = 250  # A bright film edge on the right.
  assert preprocess.border_box(framed, 6.0, 0.2) == (20, 120, 10, 110)
  out = preprocess.preprocess_image(Image.fromarray(framed), _settings(crop_borders=True), 50)
  expected = np.asarray(Image.fromarray(content).resize((50, 50), Image.Resampling.BOX))
  assert np.abs(out[..., 0].astype(np.float32) - expected).mean() < 3.0
  assert 120 < out[0, :, 0].mean() < 200 and 120 < out[:, -1, 0].mean() < 200  # No black bar or white edge left.


def test_border_crop_stops_at_the_limit():
  flat = np.full((100, 100), 7, np.uint8)
  assert preprocess.border_box(flat, 6.0, 0.2) == (20, 80, 20, 80)


def test_percentile_window_stretches_and_clips():
  rng = np.random.default_rng(1)
  grey = rng.integers(100, 151, (64, 64)).astype(np.uint8)
  grey[:3, :3] = 255  # Burned-in white text.
  out = preprocess.preprocess_image(Image.fromarray(grey), _settings(window_percentiles=(1.0, 99.0)), 64)[..., 0]
  assert out.min() == 0 and out.max() == 255
  assert np.percentile(out, 50) == pytest.approx(127, abs=15)  # The body spans 0-255, not 100-150.
  assert (out[:3, :3] == 255).all()


def test_histogram_equalisation_spreads_a_low_contrast_film():
  grey = np.tile(np.linspace(110, 140, 64).astype(np.uint8), (64, 1))
  out = preprocess.preprocess_image(Image.fromarray(grey), _settings(intensity='equalize'), 64)[..., 0]
  assert out.max() - out.min() > 200 and grey.max() - grey.min() <= 30


def test_clahe_raises_local_contrast_in_dark_and_bright_halves():
  rng = np.random.default_rng(2)
  grey = np.concatenate([rng.integers(20, 40, (64, 32)), rng.integers(200, 220, (64, 32))], axis=1).astype(np.uint8)
  out = preprocess.preprocess_image(Image.fromarray(grey), _settings(intensity='clahe', clahe_clip_limit=0.03),
                                    64)[..., 0].astype(np.float32)
  for half in (slice(0, 32), slice(32, 64)):
    assert out[8:56, half][:, 4:28].std() > 2 * grey[8:56, half][:, 4:28].std()
  equalised = preprocess.preprocess_image(Image.fromarray(grey), _settings(intensity='equalize'), 64)[..., 0]
  assert not np.array_equal(out.astype(np.uint8), equalised)


def test_lungs_crop_and_fill_given_a_mask():
  grey = np.arange(100 * 80, dtype=np.int64).reshape(100, 80) % 251
  grey = grey.astype(np.uint8)
  mask = np.zeros((100, 80), np.uint8)
  mask[30:70, 20:60] = 255
  cropped = preprocess.apply_lungs(grey, mask, 'crop', 0.1)
  np.testing.assert_array_equal(cropped, grey[26:74, 16:64])
  filled = preprocess.apply_lungs(grey, mask, 'fill', 0.0)
  assert (filled[mask == 0] == 0).all() and (filled[mask > 0] == grey[mask > 0]).all()
  settings = dataclasses_replace(OFF, lungs='crop', lung_margin=0.0)
  out = preprocess.preprocess_image(Image.fromarray(grey), settings, 40, lung_mask_HW=mask)
  np.testing.assert_array_equal(out[..., 0], np.asarray(Image.fromarray(grey[30:70, 20:60])))


class _DarkLungs:
  """A fake lung model: the film's pixels darker than 100 are the lungs (lungs.LungModel's `masks`)."""

  def masks(self, films):
    return [np.asarray(f)[..., :3].mean(axis=-1) < 100 if np.asarray(f).ndim == 3 else np.asarray(f) < 100
            for f in films]


def _two_lungs(side: int = 96) -> tuple[np.ndarray, np.ndarray]:
  """A bright film with two dark 'lungs' (rectangles) and a bright marker in a corner; the lungs' mask."""
  grey = np.full((side, side), 200, np.uint8)
  lungs = np.zeros((side, side), bool)
  lungs[24:72, 16:40] = lungs[24:72, 56:80] = True
  grey[lungs] = 60
  grey[2:8, 2:8] = 255  # A marker outside the lungs.
  return grey, lungs


def test_lungs_fill_and_crop_use_the_lung_model_when_no_mask_is_given():
  grey, lungs = _two_lungs()
  image = Image.fromarray(grey)
  fill = dataclasses_replace(OFF, lungs='fill')
  out = preprocess.preprocess_image(image, fill, 96, lung_model=_DarkLungs())[..., 0]
  assert (out[~lungs] == 0).all() and (out[lungs] == 60).all()  # Outside the lungs (the marker too) filled.
  np.testing.assert_array_equal(out, preprocess.preprocess_image(image, fill, 96, lung_mask_HW=lungs)[..., 0])
  crop = dataclasses_replace(OFF, lungs='crop', lung_margin=0.0)
  cropped = preprocess.preprocess_image(image, crop, 48, lung_model=_DarkLungs())[..., 0]
  np.testing.assert_array_equal(cropped, np.asarray(preprocess.area_resize(Image.fromarray(grey[24:72, 16:80]), 48)))


def test_lungs_default_to_the_shipped_model_everywhere(monkeypatch, tmp_path):
  """Train's decoder (images.load_image) and the API (inference.to_pixels) both mask by lung_unet.load_lungs()."""
  from lungjax.models import lung_unet  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(lung_unet, 'load_lungs', lambda path=None: _DarkLungs())
  grey, lungs = _two_lungs()
  path = tmp_path / 'film.png'
  Image.fromarray(grey).save(path)
  settings = dataclasses_replace(OFF, lungs='fill')
  expected = np.where(lungs, 60, 0)
  np.testing.assert_array_equal(inference.to_pixels(Image.fromarray(grey), 96, settings)[..., 0], expected)
  np.testing.assert_array_equal(inference.to_pixels(str(path), 96, settings)[..., 0], expected)


def dataclasses_replace(settings, **fields):
  import dataclasses  # pylint: disable=g-import-not-at-top
  return dataclasses.replace(settings, **fields)


@pytest.mark.parametrize('field, value, message', [
    ('working_size', -1, 'working_size'),
    ('acquisition_size', 64, 'needs config.data.preprocess.working_size'),
    ('intensity', 'gamma', 'intensity'),
    ('window_percentiles', (99.0, 1.0), 'window_percentiles'),
    ('border_max_fraction', 0.6, 'border_max_fraction'),
    ('lungs', 'box', 'lungs'),
])
def test_bad_fields_are_named(field, value, message):
  config = tiny.get_config()
  setattr(config.data.preprocess, field, value)
  with pytest.raises(ValueError, match=message):
    config_check.validate(config)


def test_configs_saved_before_preprocess_existed_read_as_off():
  config = tiny.get_config()
  with config.unlocked():
    del config.data['preprocess']
  assert preprocess.settings_of(run_fields.with_defaults(config)) == OFF  # As checkpoints.load_run_config reads it.


def test_preprocess_with_prepared_data_is_refused():
  config = tiny.get_config()
  config.data.preprocess.intensity = 'clahe'
  config.data.prepared_dir = '/somewhere'
  with pytest.raises(ValueError, match='prepared_dir'):
    config_check.validate(config)


@pytest.fixture
def preprocessed_config(tmp_path):
  root = tmp_path / 'data'
  write_image_folder(str(root / 'train'), 8, seed=3)
  config = tiny.get_config()
  config.data.root = str(root)
  config.data.preprocess.working_size = 24
  config.data.preprocess.intensity = 'clahe'
  config.data.preprocess.window_percentiles = (1.0, 99.0)
  return config


def test_train_eval_and_the_api_see_the_same_pixels(preprocessed_config, tmp_path):
  config = preprocessed_config
  settings = preprocess.settings_of(config)
  loaded = loading.load_folder(os.path.join(config.data.root, 'train'), config, require_all_classes=True)
  path = loaded.decoded.paths[0]
  with Image.open(path) as image:
    expected = preprocess.preprocess_image(image.convert('RGB'), settings, config.data.image_size)
  np.testing.assert_array_equal(loaded.decoded.images_NHWC[0], expected)
  assert not np.array_equal(expected, inference.to_pixels(path, config.data.image_size))  # The steps did something.
  np.testing.assert_array_equal(inference.to_pixels(path, config.data.image_size, settings), expected)
  with Image.open(path) as image:
    pixels = np.asarray(image.convert('RGB'))
  np.testing.assert_array_equal(inference.to_pixels(pixels, config.data.image_size, settings), expected)
  model = inference.Model(config, None, None, 0, str(tmp_path))
  np.testing.assert_array_equal(model.pixels([path])[0], expected)


def test_a_run_records_its_preprocessing(preprocessed_config, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(preprocessed_config, workdir)
  saved = json.load(open(os.path.join(workdir, 'config.json')))
  assert saved['data']['preprocess']['intensity'] == 'clahe'
  card = json.load(open(os.path.join(workdir, 'model_card.json')))
  assert 'CLAHE' in card['preprocessing']['steps']['steps']
  assert 'area-averaged to 24 px' in open(os.path.join(workdir, 'MODEL_CARD.md')).read()
  model = inference.load(workdir)
  assert model.preprocess == preprocess.settings_of(preprocessed_config)
  path = os.path.join(preprocessed_config.data.root, 'train', 'Covid', '000.png')
  np.testing.assert_array_equal(model.pixels(path)[0],
                                images.load_image(path, 32, model.preprocess).pixels_HWC)
