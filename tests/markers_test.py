"""data/markers.py: planted letters found, plain films give none, the lungs never masked, the preprocessing option."""

import os

import ml_collections
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from lungjax.data import markers, preprocess

FONT = '/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf'
needs_font = pytest.mark.skipif(not os.path.exists(FONT), reason='DejaVu fonts are absent')


def film(size: int = 400, seed: int = 0) -> np.ndarray:
  """A smooth synthetic 'film': dark edges, a brighter body with two darker lung fields, film grain."""
  rng = np.random.default_rng(seed)
  rows, cols = np.mgrid[0:size, 0:size] / size
  body = 60 + 90 * np.exp(-((rows - 0.55) ** 2 / 0.12 + (cols - 0.5) ** 2 / 0.08))
  lungs = np.exp(-((rows - 0.5) ** 2 / 0.03 + (cols - 0.32) ** 2 / 0.006)) + np.exp(
      -((rows - 0.5) ** 2 / 0.03 + (cols - 0.68) ** 2 / 0.006))
  return np.clip(body - 50 * lungs + rng.normal(0, 3, (size, size)), 0, 255).astype(np.uint8)


def lung_mask(size: int = 400) -> np.ndarray:
  rows, cols = np.mgrid[0:size, 0:size] / size
  left = (rows - 0.5) ** 2 / 0.07 + (cols - 0.3) ** 2 / 0.04 < 1
  return left | left[:, ::-1]


def plant(grey_HW: np.ndarray, text: str, top: int, left: int, height: int, level: int) -> tuple[int, int, int, int]:
  """Draws text in place; returns its box (top, left, bottom, right)."""
  image = Image.fromarray(grey_HW)
  font = ImageFont.truetype(FONT, int(height / 0.72))
  x0, y0, x1, y1 = font.getbbox(text)
  ImageDraw.Draw(image).text((left - x0, top - y0), text, fill=level, font=font)
  grey_HW[:] = np.asarray(image)
  return (top, left, top + y1 - y0, left + x1 - x0)


def covered(box, found) -> float:
  mask_HW = markers.boxes_mask([m.box for m in found], (10_000, 10_000))
  t, l, b, r = box
  return float(mask_HW[t:b, l:r].mean())


@needs_font
@pytest.mark.parametrize('text,level,corner', [('R', 250, (20, 20)), ('L', 250, (20, 340)),
                                               ('PORTABLE', 245, (360, 130)), ('AP', 5, (340, 20))])
def test_planted_letters_are_found(text, level, corner):
  grey_HW = film()
  if level < 128:  # Black print on a white label, as hospital labels are.
    grey_HW[corner[0] - 8:corner[0] + 40, corner[1] - 8:corner[1] + 60] = 235
  box = plant(grey_HW, text, corner[0], corner[1], 20, level)
  found = markers.find_markers(grey_HW)
  assert covered(box, found) >= 0.5, (text, box, found)


def test_plain_films_give_no_markers():
  for seed in range(3):
    assert markers.find_markers(film(seed=seed)) == []
  rows_HW = np.tile(np.linspace(0, 255, 300, dtype=np.float32)[:, None], (1, 300))
  noise_HW = np.clip(rows_HW + np.random.default_rng(0).normal(0, 8, (300, 300)), 0, 255).astype(np.uint8)
  assert markers.find_markers(noise_HW) == []
  assert not markers.marker_mask(noise_HW).any()


@needs_font
def test_the_lungs_are_never_masked():
  grey_HW = film()
  lungs_HW = lung_mask()
  plant(grey_HW, 'R', 20, 20, 20, 250)
  box = plant(grey_HW, 'AP', 200, 44, 20, 250)  # On the left lung, in the border band, outside the central zone.
  assert covered(box, markers.find_markers(grey_HW)) >= 0.5  # Without the lungs it is a marker ...
  plant(grey_HW, 'L', 190, 195, 20, 250)  # In the central zone, where no marker is ever taken.
  mask_HW = markers.marker_mask(grey_HW, lungs_HW)
  assert mask_HW[:60, :60].any()
  assert covered(box, markers.find_markers(grey_HW, lungs_HW)) == 0  # ... with the lungs given it is not,
  assert not (mask_HW & lungs_HW).any()  # and no lung pixel is masked.
  assert not markers.marker_mask(grey_HW)[int(0.25 * 400):int(0.75 * 400), int(0.25 * 400):int(0.75 * 400)].any()


@needs_font
def test_mask_markers_changes_the_model_input_only_where_markers_are():
  grey_HW = film()
  box = plant(grey_HW, 'R', 20, 20, 24, 250)
  image = Image.fromarray(grey_HW)
  config = ml_collections.ConfigDict({'data': {'preprocess': {}, 'mask_markers': True}})
  on = preprocess.settings_of(config)
  assert on.mask_markers and on.active and 'markers' in on.describe()
  assert preprocess.record(on)['mask_markers'] is True
  assert 'mask_markers' not in preprocess.record(preprocess.PreprocessSettings())  # Old fingerprints unchanged.
  masked_SSC = preprocess.preprocess_image(image, on, 400)
  plain_SSC = preprocess.preprocess_image(image, preprocess.PreprocessSettings(working_size=400), 400)
  changed_HW = (masked_SSC != plain_SSC).any(-1)
  t, l, b, r = box
  assert changed_HW[t:b, l:r].mean() > 0.3  # The letter is gone ...
  region_HW = markers.marker_mask(grey_HW)  # With config.data.preprocess.lungs off: the film alone.
  assert not changed_HW[~region_HW].any()  # ... and nothing else changed.
  assert masked_SSC[t:b, l:r, 0].max() < 200
  # Given lungs that cover the letter, the step leaves it alone: it never fills the (grown) lungs.
  over_HW = np.zeros(grey_HW.shape, bool)
  over_HW[t:b, l:r] = True
  kept_SSC = preprocess.preprocess_image(image, on, 400, lung_mask_HW=over_HW)
  assert (kept_SSC == plain_SSC).all()


def test_grown_lungs_reach_the_guard_distance_and_no_further():
  lungs_HW = np.zeros((400, 400), bool)
  lungs_HW[100:300, 100:300] = True
  assert (markers.grown_lungs(lungs_HW, lungs_HW.shape, 0.0) == lungs_HW).all()
  grown_HW = markers.grown_lungs(lungs_HW, lungs_HW.shape, 0.05)  # 20 px of the 400 px side.
  assert grown_HW[100:300, 100:300].all() and grown_HW[200, 82] and grown_HW[318, 200]
  assert not grown_HW[200, 76] and not grown_HW[324, 200] and not grown_HW[:70].any()
  small_HW = markers.grown_lungs(lungs_HW, (200, 200), 0.05)  # Resized first: 10 px of the 200 px side.
  assert small_HW[100, 41] and not small_HW[100, 37]
  with pytest.raises(ValueError, match='lung_guard'):
    markers.grown_lungs(lungs_HW, lungs_HW.shape, -0.1)
  specks_HW = lungs_HW.copy()
  specks_HW[20:30, 20:30] = True  # A speck (the U-Net marks printed letters so) far from the lungs: dropped.
  specks_HW[100:300, 320:360] = True  # A second lung (0.2 of the first's area): kept.
  kept_HW = markers.grown_lungs(specks_HW, specks_HW.shape, 0.0)
  assert not kept_HW[20:30, 20:30].any() and kept_HW[100:300, 320:360].all() and kept_HW[100:300, 100:300].all()


@needs_font
def test_the_guard_drops_a_marker_at_the_lungs_edge():
  """A letter 6 px outside a (predicted) lung edge is a marker with no guard, and not with a 3% guard (12 px)."""
  grey_HW = film()
  box = plant(grey_HW, 'R', 150, 30, 20, 250)
  t, l, b, r = box
  lungs_HW = np.zeros(grey_HW.shape, bool)
  lungs_HW[100:300, r + 6:200] = True
  assert covered(box, markers.find_markers(grey_HW, lungs_HW, lung_guard=0.0)) >= 0.5
  assert covered(box, markers.find_markers(grey_HW, lungs_HW, lung_guard=0.03)) == 0
  guarded_HW = markers.marker_mask(grey_HW, lungs_HW, lung_guard=0.03)
  assert not (guarded_HW & markers.grown_lungs(lungs_HW, grey_HW.shape, 0.03)).any()


def test_mask_markers_must_be_a_bool():
  config = ml_collections.ConfigDict({'data': {'preprocess': {}, 'mask_markers': 'yes'}})
  with pytest.raises(ValueError, match='config.data.mask_markers'):
    preprocess.settings_of(config)


@needs_font
def test_only_the_border_band_holds_markers():
  """A letter 3/40 of the side from the edge is a marker; the same letter 7/40 in (on the body: an author's arrow
  or a zone number on the lungs, an ECG clip) is not."""
  near_HW, far_HW = film(), film()
  near = plant(near_HW, 'R', 150, 30, 20, 250)
  far = plant(far_HW, 'R', 150, 70, 20, 250)
  assert covered(near, markers.find_markers(near_HW)) >= 0.5
  assert 70 > markers.EDGE_BAND * 400 and markers.find_markers(far_HW) == []


@needs_font
def test_the_lung_overlap_benchmark_counts_marker_pixels_on_the_lungs():
  from benchmarks import markers_lungs  # pylint: disable=g-import-not-at-top
  grey_HW = film()
  box = plant(grey_HW, 'R', 20, 20, 20, 250)
  lungs_HW = np.zeros(grey_HW.shape, bool)
  lungs_HW[box[0]:box[0] + 10, box[1]:box[1] + 10] = True  # A "lung" under part of the letter.
  row = markers_lungs.film_overlap(grey_HW, lungs_HW)
  assert row['n_markers'] == 1 and row['lung_pixels'] == 100 == row['markers'][0]['lung_pixels']
  given = markers_lungs.film_overlap(grey_HW, lungs_HW, predicted_HW=lungs_HW)  # The detector told of the lungs.
  assert given['lung_pixels'] == 0
  assert markers_lungs.summarise([row, given])['films_with_lung_pixels'] == 1


@needs_font
def test_audit_hands_the_lungs_to_the_detector_only_when_asked(tmp_path, monkeypatch):
  from lungjax import lungs  # pylint: disable=g-import-not-at-top
  from lungjax.tools import audit  # pylint: disable=g-import-not-at-top
  grey_HW = film()
  t, l, b, r = plant(grey_HW, 'R', 20, 20, 20, 250)
  path = tmp_path / 'film.png'
  Image.fromarray(grey_HW).save(path)
  over_HW = np.zeros(grey_HW.shape, bool)
  over_HW[t:b, l:r] = True  # "Lungs" under the letter: a lungs-aware audit must not report it.
  monkeypatch.setattr(lungs, 'lung_mask_of', lambda image, model=None: over_HW)
  assert audit.find_file_markers(str(path))['n_markers'] == 1
  assert audit.find_file_markers(str(path), lungs=True)['n_markers'] == 0
