"""Decoding odd images to RGB uint8, and clear errors (or counted skips) for bad files."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from lungjax.data import folders, images

SIZE = 8


def _save(image: Image.Image, path, **kwargs) -> str:
  image.save(path, **kwargs)
  return str(path)


def _load(path: str) -> np.ndarray:
  pixels = images.load_image(path, SIZE).pixels_HWC
  assert pixels.shape == (SIZE, SIZE, 3) and pixels.dtype == np.uint8
  return pixels


def test_modes_decode_to_the_same_dtype_and_range(tmp_path):
  grey = _load(_save(Image.new('L', (20, 10), 90), tmp_path / 'grey.png'))
  assert (grey == 90).all()
  rgba = _load(_save(Image.new('RGBA', (20, 10), (200, 100, 50, 128)), tmp_path / 'rgba.png'))
  np.testing.assert_allclose(rgba[0, 0], [100, 50, 25], atol=1)  # Composited over black.
  palette = Image.new('P', (20, 10), 1)
  palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
  assert (_load(_save(palette, tmp_path / 'palette.png')) == [10, 20, 30]).all()
  cmyk = _load(_save(Image.new('CMYK', (20, 10), (0, 0, 0, 0)), tmp_path / 'cmyk.jpg'))
  assert cmyk.min() >= 250
  one_pixel = _load(_save(Image.new('RGB', (1, 1), (7, 8, 9)), tmp_path / 'tiny.png'))
  assert (one_pixel == [7, 8, 9]).all()


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
  values = np.full((10, 20), 32896, np.uint16)  # 128 * 257: mid grey in 16 bits.
  path = _save(Image.fromarray(values), tmp_path / 'deep.png')
  assert Image.open(path).mode.startswith('I')
  assert (_load(path) == 128).all()


def test_exif_rotation_is_applied(tmp_path):
  pixels = np.zeros((10, 30, 3), np.uint8)
  pixels[:, :10] = 255  # Left third white.
  exif = Image.Exif()
  exif[0x0112] = 6  # Rotate 90 degrees clockwise to display.
  path = _save(Image.fromarray(pixels), tmp_path / 'rotated.jpg', exif=exif, quality=95)
  full = images.load_image(path, 30).pixels_HWC
  upright = np.asarray(Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_270).resize((30, 30)))
  assert np.abs(full.astype(int) - upright.astype(int)).mean() < 10


@pytest.mark.parametrize('kind', ['empty', 'text', 'truncated', 'tiff_named_png'])
def test_bad_files_raise_naming_the_file(tmp_path, kind):
  path = tmp_path / f'bad {kind}.png'
  buffer = io.BytesIO()
  if kind == 'empty':
    path.write_bytes(b'')
  elif kind == 'text':
    path.write_text('this is not an image')
  elif kind == 'truncated':
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buffer, 'PNG')
    path.write_bytes(buffer.getvalue()[:300])
  else:
    Image.new('RGB', (8, 8)).save(buffer, 'TIFF')
    path.write_bytes(buffer.getvalue())
  with pytest.raises(images.BadImageError, match=f'bad {kind}.png'):
    images.load_image(str(path), SIZE)


def test_decode_records_raises_or_skips_and_counts(tmp_path):
  good = _save(Image.new('RGB', (10, 10), (1, 2, 3)), tmp_path / 'good.png')
  copy = _save(Image.new('RGB', (10, 10), (1, 2, 3)), tmp_path / 'copy.png')
  other = _save(Image.new('RGB', (10, 10), (3, 2, 1)), tmp_path / 'other.png')
  bad = tmp_path / 'bad.jpg'
  bad.write_bytes(b'\xff\xd8\xff garbage')
  records = [folders.Record(p, i % 2) for i, p in enumerate([good, str(bad), copy, other])]
  with pytest.raises(images.BadImageError, match='bad.jpg.*skip_bad_images'):
    images.decode_records(records, SIZE)
  decoded = images.decode_records(records, SIZE, skip_bad_images=True)
  assert decoded.paths == (good, copy, other)
  assert decoded.labels_N.tolist() == [0, 0, 1]
  assert [path for path, _ in decoded.skipped] == [str(bad)]
  assert decoded.pixel_hashes[0] == decoded.pixel_hashes[1] != decoded.pixel_hashes[2]
  assert decoded.images_NHWC.shape == (3, SIZE, SIZE, 3)
  assert decoded.thumbnails_ND.shape == (3, images.THUMBNAIL_SIZE**2)
  assert (decoded.images_NHWC[2] == [3, 2, 1]).all()


def test_golden_arrays_of_every_mode(tmp_path):
  """Each odd mode decodes to exactly these uint8 RGB values (full size, so no resize blurs them)."""
  size = 4
  palette = Image.new('P', (size, size), 2)
  palette.putpalette([0, 0, 0, 0, 0, 0, 11, 22, 33] + [0] * 759)
  exif = Image.Exif()
  exif[0x0112] = 3  # Rotate 180.
  top_white = np.zeros((size, size, 3), np.uint8)
  top_white[:2] = 255
  cases = {
      'sixteen.png': (Image.fromarray(np.full((size, size), 65535, np.uint16)), {}, [255, 255, 255]),
      'rgba.png': (Image.new('RGBA', (size, size), (255, 128, 0, 255)), {}, [255, 128, 0]),
      'palette.png': (palette, {}, [11, 22, 33]),
      'grey.png': (Image.new('L', (size, size), 77), {}, [77, 77, 77]),
      'cmyk.jpg': (Image.new('CMYK', (size, size), (0, 0, 0, 255)), {'quality': 100}, [0, 0, 0]),
  }
  for name, (image, kwargs, expected) in cases.items():
    pixels = images.load_image(_save(image, tmp_path / name, **kwargs), size).pixels_HWC
    assert pixels.dtype == np.uint8 and pixels.shape == (size, size, 3), name
    np.testing.assert_allclose(pixels.astype(int), np.broadcast_to(expected, pixels.shape), atol=2, err_msg=name)
  rotated = images.load_image(_save(Image.fromarray(top_white), tmp_path / 'rot.png', exif=exif), size).pixels_HWC
  assert (rotated[2:] == 255).all() and (rotated[:2] == 0).all()  # Upside down: the white half at the bottom.
  one = images.load_image(_save(Image.new('RGB', (1, 1), (5, 6, 7)), tmp_path / 'one.png'), 1).pixels_HWC
  np.testing.assert_array_equal(one, [[[5, 6, 7]]])


def test_decompression_bomb_header_is_refused_quickly_naming_the_file(tmp_path):
  import time
  from lungjax import faults
  path = tmp_path / 'huge.png'
  path.write_bytes(faults.bomb_png(20000, 20000))
  began = time.perf_counter()
  with pytest.raises(images.BadImageError, match='huge.png.*too many pixels'):
    images.load_image(str(path), SIZE)
  assert time.perf_counter() - began < 1.0
  path.write_bytes(faults.bomb_png(10000, 10000))  # Between 1x and 2x Pillow's limit, where Pillow only warns.
  with pytest.raises(images.BadImageError, match='too many pixels'):
    images.load_image(str(path), SIZE)
