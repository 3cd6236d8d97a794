"""explain.py: overlays, their names, and explain_folder end to end (Grad-CAM itself: gradcam_test)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import tiny
from lungjax import train
from lungjax.explain import gallery as explain
from lungjax.runtime import workdir
from lungjax.data import images, loading
from tests.conftest import CLASSES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_overlay_names_keep_the_extension_and_never_collide():
  names = explain.overlay_names(['Covid/a.jpg', 'Covid/a.png', 'Covid/A.jpg', 'Normal/a.jpg', 'b.jpeg'])
  assert names == ['Covid/a.jpg.gradcam.png', 'Covid/a.png.gradcam.png', 'Covid/A.jpg.gradcam-2.png',
                   'Normal/a.jpg.gradcam.png', 'b.jpeg.gradcam.png']


def test_overlay_keeps_cold_pixels_and_colours_hot_ones():
  pixels_HWC = np.full((2, 2, 3), 100, np.uint8)
  heatmap_HW = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
  blended = explain.overlay(pixels_HWC, heatmap_HW)
  np.testing.assert_array_equal(blended[0], pixels_HWC[0])
  hot = np.array([0.5, 0.0, 0.0]) * 255 * explain.OVERLAY_ALPHA + 100 * (1 - explain.OVERLAY_ALPHA)
  np.testing.assert_allclose(blended[1, 0], hot, atol=1.5)  # 'jet' at 1 is dark red (0.5, 0, 0).


# PNG chunks that hold pixels and layout only: no text, time, EXIF, ICC profile or software tag.
PIXEL_CHUNKS = {'IHDR', 'PLTE', 'tRNS', 'pHYs', 'IDAT', 'IEND'}


def _assert_png_without_metadata(path):
  with open(path, 'rb') as f:
    data = f.read()
  assert data[:8] == b'\x89PNG\r\n\x1a\n', path
  chunks, position = [], 8
  while position < len(data):
    length = int.from_bytes(data[position:position + 4], 'big')
    chunks.append(data[position + 4:position + 8].decode('latin-1'))
    position += 12 + length
  assert set(chunks) <= PIXEL_CHUNKS, (path, chunks)


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory, synthetic_root):
  """A workdir that the tiny config trained in (2 epochs on the synthetic folders)."""
  config = tiny.get_config()
  config.data.root = synthetic_root
  workdir = str(tmp_path_factory.mktemp('explain run'))
  train.train_and_evaluate(config, workdir)
  return workdir


def _explain_config(synthetic_root, folder):
  config = tiny.get_config()
  config.data.root = synthetic_root
  config.explain.dir = folder
  return config


def test_explain_folder_of_class_folders(trained_workdir, synthetic_root):
  folder = os.path.join(synthetic_root, 'test')
  summary = explain.explain_folder(_explain_config(synthetic_root, folder), trained_workdir)
  out_dir = os.path.join(trained_workdir, 'explain', workdir.folder_identity([folder]))
  assert summary['out_dir'] == os.path.abspath(out_dir) and summary['n_images'] == 12 and summary['labelled']
  for name in CLASSES:
    for i in range(4):
      overlay_path = os.path.join(out_dir, name, f'{i:03d}.png.gradcam.png')
      _assert_png_without_metadata(overlay_path)
      with Image.open(overlay_path) as image:
        assert image.size == (32, 32)
  _assert_png_without_metadata(os.path.join(out_dir, 'gallery.png'))
  rows = summary['images']
  assert [row['true'] for row in rows] == [name for name in CLASSES for _ in range(4)]
  assert all(row['explained_class'] == row['predicted'] and 0 < row['confidence'] <= 1 for row in rows)
  assert summary['accuracy'] == np.mean([row['true'] == row['predicted'] for row in rows])
  with open(os.path.join(out_dir, 'explain.json')) as f:
    assert json.load(f) == summary


def test_explain_flat_folder_with_a_chosen_class(trained_workdir, synthetic_root, tmp_path):
  folder = tmp_path / 'loose images'
  folder.mkdir()
  rng = np.random.default_rng(3)
  for name in ('x.png', 'y.jpg', 'z.png'):
    Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(folder / name)
  (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
  (folder / 'notes.txt').write_text('not an image')
  config = _explain_config(synthetic_root, str(folder))
  config.explain.class_name = 'Normal'
  config.data.skip_bad_images = True
  summary = explain.explain_folder(config, trained_workdir)
  out_dir = os.path.join(trained_workdir, 'explain', workdir.folder_identity([str(folder)]))
  assert sorted(os.listdir(out_dir)) == [workdir.COMPLETE, workdir.MANIFEST, 'explain.json', 'gallery.png', 'x.png.gradcam.png',
                                         'y.jpg.gradcam.png', 'z.png.gradcam.png']
  assert not summary['labelled'] and 'accuracy' not in summary
  assert [row['true'] for row in summary['images']] == [None] * 3
  assert {row['explained_class'] for row in summary['images']} == {'Normal'}
  assert sorted(os.path.basename(path) for path, _ in summary['skipped_images']) == ['broken.png', 'notes.txt']


@pytest.mark.parametrize('field, value, error, message', [
    ('class_name', 'Flu', ValueError, r"config.explain.class_name='Flu' is not one of config.data.classes"),
    ('layer', 'Conv_7', ValueError, r"config.explain.layer='Conv_7' is not a module of model CNN"),
    ('dir', '/no/such/folder', FileNotFoundError, r"config.explain.dir='/no/such/folder' is not a folder"),
    ('dir', '', ValueError, r'--config.explain.dir=FOLDER'),
])
def test_explain_folder_names_the_bad_config_field(trained_workdir, synthetic_root, field, value, error, message):
  config = _explain_config(synthetic_root, os.path.join(synthetic_root, 'test'))
  config.explain[field] = value
  with pytest.raises(error, match=message):
    explain.explain_folder(config, trained_workdir)


@pytest.mark.parametrize('field, value, message', [
    ('layer', 'Conv_7', r"config.explain.layer='Conv_7' is not a module of model CNN"),
    ('class_name', 'Flu', r"config.explain.class_name='Flu' is not one of config.data.classes"),
])
def test_a_bad_explain_field_is_refused_before_any_image_is_decoded(trained_workdir, synthetic_root, monkeypatch,
                                                                   field, value, message):
  def refuse(*args, **kwargs):
    raise AssertionError('an image was decoded before the bad field was found')
  monkeypatch.setattr(images, 'decode_records', refuse)
  monkeypatch.setattr(loading.images, 'decode_records', refuse)
  config = _explain_config(synthetic_root, os.path.join(synthetic_root, 'test'))
  config.explain[field] = value
  with pytest.raises(ValueError, match=message):
    explain.explain_folder(config, trained_workdir)


@pytest.mark.slow
def test_main_explain_mode_prints_where_the_files_went(trained_workdir, synthetic_root):
  folder = os.path.join(synthetic_root, 'test', 'Covid')
  result = subprocess.run(
      [sys.executable, '-m', 'lungjax.main', '--config=configs/tiny.py', f'--workdir={trained_workdir}',
       '--mode=explain', f'--config.explain.dir={folder}'],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO), capture_output=True, text=True,
      timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  out_dir = os.path.join(trained_workdir, 'explain', workdir.folder_identity([folder]))
  assert f'overlays     {out_dir}' in result.stdout
  assert f'gallery      {os.path.join(out_dir, "gallery.png")}' in result.stdout
  assert sorted(os.listdir(out_dir)) == [workdir.COMPLETE, workdir.MANIFEST, *(f'{i:03d}.png.gradcam.png' for i in range(4)),
                                         'explain.json', 'gallery.png']
