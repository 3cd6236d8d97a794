"""inference.py: batching, image inputs and their errors (Model and load end to end: api_test, predict_test)."""

import numpy as np
import pytest
from PIL import Image

from lungjax import inference


def test_map_batches_pads_every_batch_to_one_shape_and_keeps_the_order():
  shapes = []

  def fn(variables, images_BHWC, indices_B):
    shapes.append((images_BHWC.shape, indices_B.shape))
    return images_BHWC.sum(axis=(1, 2, 3)) + variables, indices_B * 2

  images_NHWC = np.arange(7 * 2 * 2 * 1).reshape(7, 2, 2, 1)
  sums_N, doubled_N = inference.map_batches(fn, 100, 3, images_NHWC, np.arange(7))
  assert shapes == [((3, 2, 2, 1), (3,))] * 3
  np.testing.assert_array_equal(sums_N, images_NHWC.sum(axis=(1, 2, 3)) + 100)
  np.testing.assert_array_equal(doubled_N, np.arange(7) * 2)


def test_a_path_a_pil_image_and_an_array_of_one_picture_give_the_same_pixels(tmp_path):
  grey_HW = np.random.default_rng(0).integers(0, 256, (40, 30), np.uint8)
  Image.fromarray(grey_HW).save(tmp_path / 'a.png')
  from_path, size_HW = inference.pixels_and_size(str(tmp_path / 'a.png'), 16)
  assert from_path.shape == (16, 16, 3) and from_path.dtype == np.uint8 and size_HW == (40, 30)
  np.testing.assert_array_equal(inference.to_pixels(Image.fromarray(grey_HW), 16), from_path)
  np.testing.assert_array_equal(inference.to_pixels(grey_HW[..., None], 16), from_path)  # H x W x 1 is grey.
  rgb = inference.to_pixels(np.repeat(grey_HW[..., None], 3, axis=-1), 16)
  np.testing.assert_array_equal(rgb, from_path)


def test_bad_inputs_are_named(tmp_path):
  with pytest.raises(inference.images.BadImageError, match='no such file'):
    inference.read_image(str(tmp_path / 'missing.png'), 16)
  with pytest.raises(inference.images.BadImageError, match='a folder'):
    inference.read_image(str(tmp_path), 16)
  with pytest.raises(TypeError, match='must be uint8'):
    inference.to_pixels(np.zeros((4, 4), np.float32), 16)
  with pytest.raises(ValueError, match=r'H x W \(grey\) or H x W x 3'):
    inference.to_pixels(np.zeros((4, 4, 2), np.uint8), 16)
  with pytest.raises(ValueError, match='has no pixels'):
    inference.to_pixels(np.zeros((0, 4), np.uint8), 16)
  with pytest.raises(TypeError, match='not int'):
    inference.to_pixels(3, 16)
  with pytest.raises(ValueError, match='at least one row'):
    inference.map_batches(lambda v, x: x, None, 2, np.zeros((0, 2)))


def test_describe_names_an_image_by_mode_size_and_file_or_an_array_by_dtype_and_shape(tmp_path):
  assert inference.describe(Image.new('L', (5, 3))) == 'a PIL image (mode L, 5x3)'
  Image.new('RGB', (2, 2)).save(tmp_path / 'x.png')
  with Image.open(tmp_path / 'x.png') as opened:
    assert inference.describe(opened) == f"a PIL image (mode RGB, 2x2, from {str(tmp_path / 'x.png')!r})"
  assert inference.describe(np.zeros((2, 3), np.int16)) == 'a int16 array of shape (2, 3)'
