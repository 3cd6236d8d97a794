"""Decoding odd images to RGB uint8, and clear errors (or counted skips) for bad files."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from lungjax.data import decoding, folders, images

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


# Pillow's own DecompressionBombWarning for the 10,000 x 10,000 file comes before lungjax refuses it.
@pytest.mark.filterwarnings('ignore::PIL.Image.DecompressionBombWarning')
def test_decompression_bomb_header_is_refused_quickly_naming_the_file(tmp_path):
  import time
  from tests.reliability import faults
  path = tmp_path / 'huge.png'
  path.write_bytes(faults.bomb_png(20000, 20000))
  began = time.perf_counter()
  with pytest.raises(images.BadImageError, match='huge.png.*too many pixels'):
    images.load_image(str(path), SIZE)
  assert time.perf_counter() - began < 1.0
  path.write_bytes(faults.bomb_png(10000, 10000))  # Between 1x and 2x Pillow's limit, where Pillow only warns.
  with pytest.raises(images.BadImageError, match='too many pixels'):
    images.load_image(str(path), SIZE)


# ---------------------------------------------------------------------------------------------------------------
# Deep grey PNGs are scaled by their real bit depth; blank, low-contrast and tiny images are warned about.


def _picture() -> np.ndarray:
  """An 8-bit grey picture using the full 0..255 range (a ramp plus a bright square)."""
  picture = np.tile(np.linspace(0, 255, 48), (40, 1))
  picture[10:20, 30:40] = 255
  return np.rint(picture).astype(np.uint8)


def _sixteen_bit_png(values: np.ndarray, path, significant_bits: int | None = None) -> str:
  """Saves uint16 grey values as a 16-bit PNG, with an sBIT chunk when significant_bits is given."""
  from PIL import PngImagePlugin
  info = PngImagePlugin.PngInfo()
  if significant_bits is not None:
    info.add(b'sBIT', bytes([significant_bits]))
  image = Image.fromarray(values.astype(np.uint16))
  image.save(path, pnginfo=info)
  assert Image.open(path).mode == 'I;16'
  return str(path)


def _twelve_bit(picture: np.ndarray) -> np.ndarray:
  return np.rint(picture.astype(np.float64) * 4095 / 255).astype(np.uint16)


DEPTHS = {
    '12-bit, no sBIT': lambda p, path: _sixteen_bit_png(_twelve_bit(p), path),
    '12-bit, sBIT 12': lambda p, path: _sixteen_bit_png(_twelve_bit(p), path, 12),
    # The PNG specification's way: 12 significant bits scaled up to 16 (left shift, top bits repeated).
    '12-bit scaled up, sBIT 12': lambda p, path: _sixteen_bit_png(
        (_twelve_bit(p).astype(np.uint32) << 4) | (_twelve_bit(p) >> 8), path, 12),
    '10-bit, no sBIT': lambda p, path: _sixteen_bit_png(np.rint(p.astype(np.float64) * 1023 / 255), path),
    '16-bit, full range': lambda p, path: _sixteen_bit_png(p.astype(np.uint16) * 257, path),
    '16-bit, sBIT 16': lambda p, path: _sixteen_bit_png(p.astype(np.uint16) * 257, path, 16),
}


@pytest.mark.parametrize('depth', list(DEPTHS))
def test_the_same_picture_at_8_12_and_16_bits_decodes_alike(tmp_path, depth):
  picture = _picture()
  eight = images.load_image(_save(Image.fromarray(picture), tmp_path / 'eight.png'), SIZE)
  path = DEPTHS[depth](picture, tmp_path / 'deep.png')
  deep = images.load_image(path, SIZE)
  assert np.abs(deep.pixels_HWC.astype(int) - eight.pixels_HWC.astype(int)).max() <= 1, depth
  with Image.open(path) as image:
    full = images.to_rgb_uint8(image)
  assert np.abs(full.astype(int) - picture[..., None].astype(int)).max() <= 1, depth
  assert deep.warnings == () == eight.warnings


def test_deep_grey_modes_from_arrays_scale_by_bit_depth():
  """Pillow's I (32-bit) and I;16B images, made in memory (no file, so no sBIT): scaled by their maximum."""
  picture = _picture()
  twelve = _twelve_bit(picture)
  for image in (Image.fromarray(twelve.astype(np.int32)), Image.fromarray(twelve.astype('>u2')),
                Image.fromarray(twelve)):
    assert image.mode in ('I', 'I;16B', 'I;16'), image.mode
    np.testing.assert_allclose(images.to_rgb_uint8(image)[..., 0], picture, atol=1, err_msg=image.mode)
  eight_in_int32 = Image.fromarray(picture.astype(np.int32))
  np.testing.assert_array_equal(images.to_rgb_uint8(eight_in_int32)[..., 0], picture)
  # Given explicitly, sBIT 16 keeps 12-bit values as the dark 16-bit values they then are.
  np.testing.assert_allclose(images.to_rgb_uint8(Image.fromarray(twelve), significant_bits=16)[..., 0],
                             np.rint(twelve.astype(np.float64) * 255 / 65535), atol=0)


def test_significant_bits_are_read_from_the_png(tmp_path):
  picture = _picture()
  assert images.png_significant_bits(_sixteen_bit_png(_twelve_bit(picture), tmp_path / 'a.png', 12)) == 12
  assert images.png_significant_bits(_sixteen_bit_png(_twelve_bit(picture), tmp_path / 'b.png')) is None
  assert images.png_significant_bits(_save(Image.new('RGB', (4, 4)), tmp_path / 'c.jpg')) is None
  marked_16 = _sixteen_bit_png(np.full((8, 8), 4095), tmp_path / 'd.png', 16)
  with open(marked_16, 'rb') as f, Image.open(io.BytesIO(f.read())) as image:  # Read from the open bytes.
    assert (images.to_rgb_uint8(image) == 16).all()
  with Image.open(marked_16) as image:  # Read from the file.
    assert (images.to_rgb_uint8(image) == 16).all()
  assert images.sixteen_bit_scale(4095) == (4095, '12-bit (maximum 4095, no sBIT chunk)')
  assert images.sixteen_bit_scale(4096)[0] == 16383
  assert images.sixteen_bit_scale(200)[0] == 255
  assert images.sixteen_bit_scale(70000)[0] == (1 << 17) - 1  # Mode I beyond 16 bits.
  assert images.sixteen_bit_scale(4095, 12)[0] == 4095
  assert images.sixteen_bit_scale(65535, 12)[0] == 65535  # Scaled up to 16 bits, as the PNG specification asks.


def test_sbit_16_over_12_bit_data_is_dark_and_warned_about(tmp_path, caplog):
  """sBIT wins over the data's range: 12-bit values that say they are 16-bit stay dark, with a warning."""
  path = _sixteen_bit_png(_twelve_bit(_picture()), tmp_path / 'dark.png', 16)
  loaded = images.load_image(path, SIZE)
  assert loaded.pixels_HWC.max() <= 16
  assert len(loaded.warnings) == 1 and loaded.warnings[0].startswith('low contrast')
  assert 'sBIT 16' in loaded.warnings[0]


@pytest.mark.parametrize('kind, expected', [
    ('low contrast', ['low contrast: its grey levels span 8 of 255']),
    ('blank', ['blank: every pixel is 90']),
    ('one pixel', ['tiny: 1x1 pixels (a side under 32)', 'blank: every pixel is (7, 8, 9)']),
    ('narrow', ['tiny: 20x64 pixels (a side under 32)']),
    ('blank 16-bit', ['blank: every pixel is 0 (I;16 data scaled as 8-bit (maximum 0, no sBIT chunk))']),
    ('low contrast 16-bit', ['low contrast: its values span 3000 of 65535 (under 0.0625 of the range) (I;16 data '
                             'scaled as 16-bit (maximum 60000, no sBIT chunk))']),
])
def test_images_with_little_information_are_warned_about_once_per_file(tmp_path, caplog, kind, expected):
  if kind == 'low contrast':
    image = Image.fromarray((100 + np.arange(64 * 64).reshape(64, 64) % 9).astype(np.uint8))
  elif kind == 'blank':
    image = Image.new('L', (64, 64), 90)
  elif kind == 'one pixel':
    image = Image.new('RGB', (1, 1), (7, 8, 9))
  elif kind == 'narrow':
    image = Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (20, 1)).T.copy())
  elif kind == 'blank 16-bit':
    image = Image.fromarray(np.zeros((64, 64), np.uint16))
  else:
    image = Image.fromarray((57000 + np.arange(64 * 64).reshape(64, 64) % 3001).astype(np.uint16))
  path = _save(image, tmp_path / f'{kind}.png')
  with caplog.at_level('WARNING'):
    first = images.load_image(path, SIZE)
    second = images.load_image(path, SIZE)
  assert len(first.warnings) == len(expected)
  for warning, start in zip(first.warnings, expected):
    assert warning.startswith(start), (warning, start)
  assert second.warnings == first.warnings  # Returned every time ...
  logged = [r.getMessage() for r in caplog.records if path in r.getMessage()]
  assert len(logged) == len(expected), logged  # ... logged once per file.
  assert all(warning in line for warning, line in zip(first.warnings, logged))


def test_ordinary_images_have_no_warnings_and_decode_records_counts_them(tmp_path):
  good = _save(Image.fromarray(_picture()), tmp_path / 'good.png')
  blank = _save(Image.new('L', (40, 40), 0), tmp_path / 'blank.png')
  tiny = _save(Image.fromarray(_picture()[:8, :8]), tmp_path / 'tiny.png')
  assert images.load_image(good, SIZE).warnings == ()
  decoded = images.decode_records([folders.Record(p, 0) for p in (good, blank, tiny)], SIZE)
  assert [path for path, _ in decoded.warnings] == [blank, tiny]
  assert decoded.subset([0, 2]).warnings == decoded.warnings


# ---------------------------------------------------------------------------------------------------------------
# Bounded decoding: strips give today's pixels and hashes; a byte budget bounds the decodes in flight.


def _reference(image: Image.Image) -> np.ndarray:
  """lungjax's conversion before it worked by strips (float copies of the whole image), for 8-bit modes."""
  from PIL import ImageOps
  image = ImageOps.exif_transpose(image)
  if image.mode == 'P' and 'transparency' in image.info:
    image = image.convert('RGBA')
  if image.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):
    rgba = np.asarray(image.convert('RGBA'), dtype=np.float32)
    return np.clip(np.rint(rgba[..., :3] * (rgba[..., 3:] / 255.0)), 0, 255).astype(np.uint8)
  return np.asarray(image.convert('RGB'), dtype=np.uint8)


def test_strips_give_the_whole_image_pixels_hash_and_thumbnail(tmp_path, monkeypatch):
  import hashlib
  rng = np.random.default_rng(0)
  rgba = rng.integers(0, 256, (150, 97, 4), np.uint8)
  rgba[..., 3] = np.tile(np.arange(0, 256, 256 / 97).astype(np.uint8), (150, 1))  # Every alpha level, about.
  palette = Image.fromarray(rng.integers(0, 4, (150, 97), np.uint8), 'P')
  palette.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10, 10, 10, 200] + [0] * 756)
  exif = Image.Exif()
  exif[0x0112] = 6
  cases = {
      'rgba.png': (Image.fromarray(rgba), {}),
      'la.png': (Image.fromarray(rgba[..., [0, 3]], 'LA'), {}),
      'palette.png': (palette, {'transparency': 2}),
      'grey.png': (Image.fromarray(rgba[..., 0]), {}),
      'rgb.jpg': (Image.fromarray(rgba[..., :3]), {'quality': 90, 'exif': exif}),
      'cmyk.jpg': (Image.fromarray(rgba, 'RGBA').convert('CMYK'), {}),
  }
  monkeypatch.setattr(images, 'STRIP_PIXELS', 500)  # Several rows a strip, and a short last strip.
  for name, (image, kwargs) in cases.items():
    path = _save(image, tmp_path / name, **kwargs)
    with Image.open(path) as opened:
      full = _reference(opened)
      np.testing.assert_array_equal(images.to_rgb_uint8(opened), full, err_msg=name)
    for size in (1, 16, 64, 200):
      loaded = images.load_image(path, size)
      expected = np.asarray(Image.fromarray(full).resize((size, size), Image.Resampling.BILINEAR))
      np.testing.assert_array_equal(loaded.pixels_HWC, expected, err_msg=f'{name} at {size}')
      np.testing.assert_array_equal(loaded.thumbnail, images.grey_thumbnail(full), err_msg=name)
    digest = hashlib.sha256(full.tobytes())
    digest.update(repr(full.shape).encode())
    assert loaded.pixel_hash == digest.hexdigest(), name


def test_load_image_reserves_its_estimate_from_the_budget(tmp_path, monkeypatch):
  budget = decoding.DecodeBudget(10**12)
  monkeypatch.setattr(decoding, 'decode_budget', budget)
  paths = [_save(Image.fromarray(_picture()), tmp_path / f'{i}.png') for i in range(6)]
  decoded = images.decode_records([folders.Record(p, 0) for p in paths], SIZE, threads=3)
  assert len(decoded) == 6 and budget.reserved == 0
  one = images.decode_bytes_estimate(48, 40, 'L')
  assert one <= budget.peak <= 3 * one
  small = decoding.DecodeBudget(one)  # Room for one decode at a time: they queue, and all finish.
  monkeypatch.setattr(decoding, 'decode_budget', small)
  decoded = images.decode_records([folders.Record(p, 0) for p in paths], SIZE, threads=3)
  assert len(decoded) == 6 and small.peak == one


_PEAK_SCRIPT = r'''
import sys, time
from PIL import Image
if sys.argv[1] == 'make':
  side = 9400  # 88 Mpixels: under PIL.Image.MAX_IMAGE_PIXELS (89 M), so Pillow decodes it.
  ramp = Image.linear_gradient('L').resize((side, side), Image.Resampling.NEAREST)
  alpha = Image.radial_gradient('L').resize((side, side), Image.Resampling.NEAREST)
  Image.merge('RGBA', (ramp, ramp.transpose(Image.Transpose.ROTATE_90), Image.new('L', (side, side), 128),
                       alpha)).save(sys.argv[2], compress_level=1)
else:
  from lungjax.data import images
  began = time.perf_counter()
  loaded = images.load_image(sys.argv[2], 256)
  seconds = time.perf_counter() - began
  status = dict(line.split(':', 1) for line in open('/proc/self/status'))
  print(int(status['VmHWM'].split()[0]) * 1024, seconds, loaded.pixels_HWC.shape)
'''


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists('/proc/self/status'), reason='reads VmHWM from /proc')
def test_a_9400_pixel_rgba_png_decodes_in_under_1_gb(tmp_path):
  """Issue 15: a small, highly compressed 9400 x 9400 RGBA PNG peaked at 5.2 GB decoding (float copies)."""
  import subprocess
  import sys
  path = tmp_path / 'big.png'
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=repo)
  subprocess.run([sys.executable, '-c', _PEAK_SCRIPT, 'make', str(path)], check=True, env=env, timeout=600)
  assert path.stat().st_size < 20e6
  result = subprocess.run([sys.executable, '-c', _PEAK_SCRIPT, 'load', str(path)], capture_output=True, text=True,
                          env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  peak_bytes, seconds, shape = result.stdout.split(maxsplit=2)
  assert shape.strip() == '(256, 256, 3)'
  assert int(peak_bytes) < 1 << 30, f'peak RSS {int(peak_bytes) / 2**20:.0f} MiB, {float(seconds):.1f} s'


def test_a_dangling_link_or_a_vanished_file_is_named(tmp_path):
  os.symlink(tmp_path / 'gone.png', tmp_path / 'link.png')
  for path in (tmp_path / 'link.png', tmp_path / 'never-there.png'):
    with pytest.raises(images.BadImageError, match=str(path)):
      images.load_image(str(path), 16)


def test_one_saturated_pixel_does_not_darken_a_12_bit_png(tmp_path):
  """issue 26 Medium 1: a 65535 pixel in 12-bit data without sBIT is clipped as an outlier (warned), not the scale."""
  picture = _picture()  # 40 x 48 = 1920 pixels: one outlier is allowed (0.1%, at least one).
  twelve = _twelve_bit(picture)
  twelve[0, 0] = 65535
  path = _sixteen_bit_png(twelve, tmp_path / 'hot.png')
  with Image.open(path) as image:
    full = images.to_rgb_uint8(image)[..., 0].astype(int)
  expected = picture.astype(int)
  expected[0, 0] = 255
  assert np.abs(full - expected).max() <= 1
  loaded = images.load_image(path, SIZE)
  assert [w for w in loaded.warnings if w.startswith('saturated outliers: 1 pixel(s) clipped to white')], \
      loaded.warnings
  assert '12-bit (1 pixel(s) above 4095, up to 65535' in loaded.warnings[0]
  eight = images.load_image(_save(Image.fromarray(expected.astype(np.uint8)), tmp_path / 'eight.png'), SIZE)
  assert np.abs(loaded.pixels_HWC.astype(int) - eight.pixels_HWC.astype(int)).max() <= 1
  # Two outliers in 1920 pixels are more than allowed: the maximum sets the scale (16-bit), as before.
  twelve[0, 1] = 65535
  with Image.open(_sixteen_bit_png(twelve, tmp_path / 'two.png')) as image:
    assert images.to_rgb_uint8(image)[5:, 5:].max() <= 16
  # An sBIT chunk is read as written: sBIT 16 keeps the one outlier's 16-bit scale.
  twelve[0, 1] = twelve[0, 2]
  with Image.open(_sixteen_bit_png(twelve, tmp_path / 'marked.png', 16)) as image:
    assert images.to_rgb_uint8(image)[5:, 5:].max() <= 16
  assert images.robust_sixteen_bit_scale(65535, [1, 1, 1, 1, 0], 1920)[:1] == (255,)  # All but one fit 8 bits.
  assert images.robust_sixteen_bit_scale(4095, [900, 400, 0, 0, 0], 1920) == (4095, '12-bit (maximum 4095, no '
                                                                                 'sBIT chunk)', 0)
