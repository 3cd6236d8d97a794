"""--mode=shortcuts: the masks, the verdict's rule, and two trained models (one reads a corner, one the centre)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import tiny
from lungjax import train
from lungjax.explain import shortcuts
from lungjax.runtime import workdir as workdir_lib
from tests.conftest import CLASSES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 48  # Box pixels at this size: rows 5..40, columns 5..42 (shortcuts.LUNG_BOX).
MARK = 5  # The side of each class's bright square.
# Corner task: the class is a bright square in a corner, outside the lung box (top-left, top-right, bottom-left).
CORNERS = ((0, 0), (0, SIZE - MARK), (SIZE - MARK, 0))
# Centre task: the class is a bright square at one of three places inside the lung box, far from its edges.
CENTRES = ((12, 10), (12, 32), (28, 21))


def marked_image(label: int, places, rng: np.random.Generator, mark: int = MARK) -> np.ndarray:
  """Grey noise (0-120) with a bright square (230-255) at the class's place: the only thing that tells the class."""
  pixels_HW = rng.integers(0, 121, (SIZE, SIZE))
  row, column = places[label]
  pixels_HW[row:row + mark, column:column + mark] = rng.integers(230, 256, (mark, mark))
  return np.repeat(pixels_HW[..., None], 3, axis=-1).astype(np.uint8)


def write_task(root: str, places, per_class: int, seed: int, mark: int = MARK) -> str:
  """Writes root/<class>/<i>.png images of the task; returns root."""
  rng = np.random.default_rng(seed)
  for label, name in enumerate(CLASSES):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(per_class):
      Image.fromarray(marked_image(label, places, rng, mark)).save(os.path.join(root, name, f'{i:03d}.png'))
  return root


def test_box_pixels_and_area():
  assert shortcuts.box_pixels(SIZE, SIZE) == (5, 41, 5, 43)
  assert shortcuts.box_pixels(100, 200, {'top': 0.1, 'bottom': 0.5, 'left': 0.25, 'right': 1.0}) == (10, 50, 50, 200)
  assert shortcuts.box_mask(SIZE, SIZE).sum() == 36 * 38
  for corner in CORNERS:  # The corner task's marks lie wholly outside the box, the centre task's wholly inside.
    assert not shortcuts.box_mask(SIZE, SIZE)[corner[0]:corner[0] + MARK, corner[1]:corner[1] + MARK].any()
  for centre in CENTRES:
    assert shortcuts.box_mask(SIZE, SIZE)[centre[0]:centre[0] + MARK, centre[1]:centre[1] + MARK].all()
  with pytest.raises(ValueError, match='top < bottom'):
    shortcuts.box_pixels(10, 10, {'top': 0.5, 'bottom': 0.5, 'left': 0.0, 'right': 1.0})


def test_mask_images_fills_exactly_the_box_with_each_images_mean():
  rng = np.random.default_rng(0)
  images_NHWC = rng.integers(0, 256, (3, 20, 30, 3)).astype(np.uint8)
  box = {'top': 0.2, 'bottom': 0.6, 'left': 0.1, 'right': 0.5}  # Rows 4..11, columns 3..14.
  inside_HW = np.zeros((20, 30), bool)
  inside_HW[4:12, 3:15] = True
  means_NC = np.rint(images_NHWC.astype(np.float64).mean(axis=(1, 2))).astype(np.uint8)

  hidden = shortcuts.mask_images(images_NHWC, 'lungs_hidden', box)
  only = shortcuts.mask_images(images_NHWC, 'lungs_only', box)
  for n in range(3):
    np.testing.assert_array_equal(hidden[n][inside_HW], np.broadcast_to(means_NC[n], (inside_HW.sum(), 3)))
    np.testing.assert_array_equal(hidden[n][~inside_HW], images_NHWC[n][~inside_HW])
    np.testing.assert_array_equal(only[n][~inside_HW], np.broadcast_to(means_NC[n], ((~inside_HW).sum(), 3)))
    np.testing.assert_array_equal(only[n][inside_HW], images_NHWC[n][inside_HW])
  assert hidden.dtype == only.dtype == np.uint8
  np.testing.assert_array_equal(shortcuts.mask_images(images_NHWC, 'as_is', box), images_NHWC)
  assert np.unique(means_NC, axis=0).shape[0] == 3  # Each image gets its own mean, per channel.
  with pytest.raises(ValueError, match='view'):
    shortcuts.mask_images(images_NHWC, 'lungs', box)


def test_heat_share_in_box_and_a_zero_map():
  heatmaps_NHW = np.zeros((3, SIZE, SIZE), np.float32)
  heatmaps_NHW[0, 20, 20] = 1.0  # All inside.
  heatmaps_NHW[1, 0, 0] = 1.0  # All outside.
  heatmaps_NHW[1, 20, 20] = 0.5
  shares_N = shortcuts.heat_share_in_box(heatmaps_NHW)
  np.testing.assert_allclose(shares_N[:2], [1.0, 0.5 / 1.5])
  assert np.isnan(shares_N[2])
  cam = shortcuts.cam_shares(np.array([0, 0, 1]), shares_N, CLASSES, n_bootstrap=100, seed=0)
  assert cam['means'] == {'Covid': pytest.approx((1.0 + 1 / 3) / 2)}
  assert cam['n'] == {'Covid': 2, 'Normal': 0} and cam['zero_maps'] == {'Covid': 0, 'Normal': 1}
  low, high = cam['intervals']['Covid']
  assert 1 / 3 <= low <= high <= 1.0


def _views(as_is, hidden, only, n=100):
  """view_scores of n images, 2 classes, with the given numbers right in each view."""
  labels_N = np.arange(n) % 2
  out = {}
  for view, right in zip(shortcuts.VIEWS, (as_is, hidden, only)):
    predictions_N = np.where(np.arange(n) < right, labels_N, 1 - labels_N)
    out[view] = shortcuts.view_scores(labels_N, predictions_N, CLASSES[:2])
  return out


@pytest.mark.parametrize('right, code, only_code', [
    ((95, 90, 50), 'uses_something_else', 'chance'),
    ((95, 75, 94), 'partly_outside', 'keeps_score'),
    ((95, 55, 80), 'needs_the_lungs', 'loses_part'),
    ((55, 55, 55), 'inconclusive', 'chance'),
])
def test_verdict_rule(right, code, only_code):
  views = _views(*right)
  assert views['as_is']['accuracy'] == right[0] / 100
  low, high = views['as_is']['accuracy_interval']
  assert low < right[0] / 100 < high
  result = shortcuts.verdict(views, chance=0.5)
  assert (result['lungs_hidden'], result['lungs_only']) == (code, only_code)
  if code == 'uses_something_else':
    assert 'keeps its score without the lungs: it uses something else' in result['lungs_hidden_text']


def test_cam_verdicts_compare_with_the_box_area():
  cam = {'means': {'Covid': 0.2, 'Normal': 0.7}, 'intervals': {'Covid': [0.1, 0.3], 'Normal': [0.5, 0.9]}}
  texts = shortcuts.cam_verdicts(cam, area_share=0.6)
  assert texts['Covid'].startswith('Covid: looks outside the lungs') and 'wholly below' in texts['Covid']
  assert texts['Normal'].startswith('Normal: looks inside the lungs') and "reaches the region's share" in texts['Normal']


class _FakeLungs:
  """A fake lung model (lungs.LungModel's `masks`): two 'lungs', each an ellipse, on every film; an all-black film
  gets no lungs."""

  meta = {'features': [1], 'size': 0}

  def masks(self, films):
    out = []
    for film in films:
      height, width = np.asarray(film).shape[:2]
      rows, cols = np.mgrid[0:height, 0:width]
      lungs = ((rows - 0.5 * height) / (0.3 * height))**2 + ((np.abs(cols - 0.5 * width) - 0.22 * width) /
                                                            (0.14 * width))**2 < 1
      out.append(lungs if np.asarray(film).any() else np.zeros((height, width), bool))
    return out


def test_lung_regions_use_each_films_mask_and_the_box_where_it_fails():
  rng = np.random.default_rng(0)
  images_NHWC = rng.integers(1, 256, (3, SIZE, SIZE, 3)).astype(np.uint8)
  images_NHWC[2] = 0  # The fake model finds no lungs here: the box stands in, counted.
  regions_NHW, fallback_N = shortcuts.lung_regions(images_NHWC, 'mask', _FakeLungs())
  lungs_HW = _FakeLungs().masks([images_NHWC[0]])[0]
  np.testing.assert_array_equal(regions_NHW[0], lungs_HW)
  np.testing.assert_array_equal(regions_NHW[2], shortcuts.box_mask(SIZE, SIZE))
  assert fallback_N.tolist() == [False, False, True]
  box_regions, box_fallback = shortcuts.lung_regions(images_NHWC, 'box')
  assert box_fallback.all() and (box_regions == shortcuts.box_mask(SIZE, SIZE)).all()
  # Lungs hidden fills exactly the mask (not the box); lungs only everything outside it.
  hidden = shortcuts.mask_images(images_NHWC, 'lungs_hidden', regions_NHW=regions_NHW)
  only = shortcuts.mask_images(images_NHWC, 'lungs_only', regions_NHW=regions_NHW)
  mean_C = np.rint(images_NHWC[0].astype(np.float64).mean(axis=(0, 1))).astype(np.uint8)
  np.testing.assert_array_equal(hidden[0][lungs_HW], np.broadcast_to(mean_C, (lungs_HW.sum(), 3)))
  np.testing.assert_array_equal(hidden[0][~lungs_HW], images_NHWC[0][~lungs_HW])
  np.testing.assert_array_equal(only[0][lungs_HW], images_NHWC[0][lungs_HW])
  np.testing.assert_array_equal(only[0][~lungs_HW], np.broadcast_to(mean_C, ((~lungs_HW).sum(), 3)))
  # Grad-CAM's share is measured inside the mask: heat between the lungs (inside the box) counts as outside.
  heat_NHW = np.zeros((3, SIZE, SIZE))
  heat_NHW[:, SIZE // 2, SIZE // 2] = 1.0  # The mediastinum: inside the box, between the lungs.
  assert not lungs_HW[SIZE // 2, SIZE // 2] and shortcuts.box_mask(SIZE, SIZE)[SIZE // 2, SIZE // 2]
  np.testing.assert_allclose(shortcuts.heat_share_in_box(heat_NHW, regions_NHW=regions_NHW), [0.0, 0.0, 1.0])
  with pytest.raises(ValueError, match='shortcuts.region'):
    shortcuts.lung_regions(images_NHWC, 'circle')


def test_the_figure_outlines_the_mask(tmp_path):
  images_NHWC = np.random.default_rng(0).integers(1, 256, (1, SIZE, SIZE, 3)).astype(np.uint8)
  regions_NHW, _ = shortcuts.lung_regions(images_NHWC, 'mask', _FakeLungs())
  tile = {'pixels': images_NHWC[0], 'heatmap': np.zeros((SIZE, SIZE)), 'title': 't', 'colour': 'k', 'row': 0,
          'column': 0}
  outlined, boxed = str(tmp_path / 'mask.png'), str(tmp_path / 'box.png')
  shortcuts.plot_examples([{**tile, 'region': regions_NHW[0]}], 1, 1, shortcuts.box_pixels(SIZE, SIZE), outlined, 'm')
  shortcuts.plot_examples([tile], 1, 1, shortcuts.box_pixels(SIZE, SIZE), boxed, 'b')
  with Image.open(outlined) as a, Image.open(boxed) as b:
    assert not np.array_equal(np.asarray(a), np.asarray(b))  # The outline is the mask's, not the box.


def _trained(tmp_path_factory, places, name):
  """Trains the tiny config (48 px) on a task; returns (config for the check, workdir, test folder)."""
  root = str(tmp_path_factory.mktemp(name))
  write_task(os.path.join(root, 'train'), places, per_class=40, seed=0)
  test_dir = write_task(os.path.join(root, 'held out'), places, per_class=10, seed=1)
  config = tiny.get_config()
  config.data.root = root
  config.data.image_size = SIZE
  config.data.val_fraction = 0.2
  config.model.conv_features = (8, 16, 16)
  config.train.num_epochs = 10
  config.train.batch_size = 8
  config.train.learning_rate = 3e-3
  config.eval.batch_size = 8
  config.shortcuts.region = 'box'  # These tasks are drawn against LUNG_BOX; the mask test gives its own lungs.
  workdir = os.path.join(root, 'run')
  train.train_and_evaluate(config, workdir)
  config.eval.dir = test_dir
  return config, workdir, test_dir


@pytest.fixture(scope='module')
def corner_run(tmp_path_factory):
  return _trained(tmp_path_factory, CORNERS, 'corner')


@pytest.fixture(scope='module')
def centre_run(tmp_path_factory):
  return _trained(tmp_path_factory, CENTRES, 'centre')


@pytest.mark.slow
def test_a_model_that_reads_a_corner_is_flagged(corner_run):
  config, workdir, test_dir = corner_run
  summary = shortcuts.check_shortcuts(config, workdir)
  out_dir = os.path.join(workdir, 'shortcuts', workdir_lib.folder_identity([test_dir]))
  assert summary['out_dir'] == os.path.abspath(out_dir)
  with open(os.path.join(out_dir, 'shortcuts.json')) as f:
    saved = json.load(f)
  assert set(saved['views']) == set(shortcuts.VIEWS)
  for view in shortcuts.VIEWS:
    assert set(saved['views'][view]) >= {'accuracy', 'recall', 'accuracy_interval', 'recall_interval'}
    assert set(saved['views'][view]['recall']) == set(CLASSES)
  assert set(saved['cam_share_in_lungs']) == set(CLASSES)
  assert saved['n_images'] == 30 and saved['checkpoint_step'] > 0
  assert saved['box'] == shortcuts.LUNG_BOX and saved['box_area_share'] == pytest.approx(36 * 38 / SIZE**2)
  views = saved['views']
  assert views['as_is']['accuracy'] >= 0.9, views
  assert views['lungs_hidden']['accuracy'] >= 0.9, views
  assert views['lungs_only']['accuracy'] <= 0.5, views
  assert saved['verdict']['lungs_hidden'] == 'uses_something_else'
  for name, share in saved['cam_share_in_lungs'].items():
    assert share < saved['box_area_share'], (name, saved['cam_share_in_lungs'])
  with open(os.path.join(out_dir, 'shortcuts.md')) as f:
    report = f.read()
  assert 'The model keeps its score without the lungs: it uses something else' in report
  assert 'looks outside the lungs' in report and 'Covid recall' in report
  with Image.open(os.path.join(out_dir, 'shortcuts.png')) as image:
    assert image.size[0] > 600 and image.size[1] > 300


@pytest.mark.slow
def test_a_model_that_reads_the_centre_passes(centre_run):
  config, workdir, _ = centre_run
  summary = shortcuts.check_shortcuts(config, workdir)
  views = summary['views']
  assert views['as_is']['accuracy'] >= 0.9, views
  assert views['lungs_hidden']['accuracy'] <= 0.5, views
  assert views['lungs_only']['accuracy'] >= 0.9, views
  assert summary['verdict']['lungs_hidden'] == 'needs_the_lungs'
  # Most of the heat lies in the box (0.59 of the image): 0.70 over all images here, each class above 0.6.
  assert summary['cam']['overall']['mean'] > summary['box_area_share'] + 0.05, summary['cam']
  assert min(summary['cam_share_in_lungs'].values()) > 0.55, summary['cam']
  with open(os.path.join(summary['out_dir'], 'shortcuts.md')) as f:
    assert 'uses something else' not in f.read()


@pytest.mark.slow
def test_the_mode_runs_from_the_command_line_and_keeps_files_it_did_not_write(centre_run, tmp_path):
  config, workdir, test_dir = centre_run
  command = [sys.executable, '-m', 'lungjax.main', f'--config={os.path.join(REPO, "configs", "tiny.py")}',
             f'--workdir={workdir}', '--mode=shortcuts', f'--config.eval.dir={test_dir}']
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'lungs hidden' in done.stdout and 'shortcuts.md' in done.stdout
  # A model field set explicitly that differs from the run's is refused, as in eval and explain.
  changed = config.copy_and_resolve_references()
  changed.model.conv_features = (4, 8, 8)
  with pytest.raises(ValueError, match='config.model.conv_features'):
    shortcuts.check_shortcuts(changed, workdir, overridden=['model.conv_features', 'eval.dir'])
  foreign = tmp_path / 'run'
  held_out = workdir_lib.folder_identity([config.eval.dir])
  (foreign / 'shortcuts' / held_out).mkdir(parents=True)
  for name in ('config.json', 'checkpoints'):
    os.symlink(os.path.join(workdir, name), foreign / name)
  (foreign / 'shortcuts' / held_out / 'shortcuts.md').write_text('my notes')
  with pytest.raises(FileExistsError, match='did not write'):
    shortcuts.check_shortcuts(config, str(foreign))
  assert (foreign / 'shortcuts' / held_out / 'shortcuts.md').read_text() == 'my notes'


@pytest.mark.slow
def test_the_runs_own_validation_split(centre_run):
  config, workdir, _ = centre_run
  config = config.copy_and_resolve_references()
  config.eval.dir = '@validation'
  summary = shortcuts.check_shortcuts(config, workdir)
  assert summary['out_dir'] == os.path.abspath(os.path.join(workdir, 'shortcuts', 'validation'))
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert summary['n_images'] == json.load(f)['n_val'] == 24
  assert os.path.exists(os.path.join(summary['out_dir'], 'shortcuts.png'))


@pytest.mark.slow
def test_the_check_on_each_films_lung_mask(corner_run):
  """region='mask' (the default): the fake lungs (two ellipses, the corners outside) replace the box."""
  config, workdir, _ = corner_run
  config = config.copy_and_resolve_references()
  config.shortcuts.region = 'mask'
  summary = shortcuts.check_shortcuts(config, workdir, lung_model=_FakeLungs())
  assert summary['region'] == 'mask' and summary['box_fallback'] == 0
  lungs_share = float(_FakeLungs().masks([np.ones((SIZE, SIZE), np.uint8)])[0].mean())
  assert summary['region_area_share'] == pytest.approx(lungs_share)
  assert summary['verdict']['lungs_hidden'] == 'uses_something_else'
  assert all(share < lungs_share for share in summary['cam_share_in_lungs'].values())
  with open(os.path.join(summary['out_dir'], 'shortcuts.md')) as f:
    assert "each film's own mask from the lung U-Net" in f.read()
