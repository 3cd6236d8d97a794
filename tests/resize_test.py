"""data/resize.py: area averaging where a side shrinks, bilinear where it grows, nothing when the size is right."""

import numpy as np
from PIL import Image

from lungjax.data import preprocess, resize


def test_shrinking_averages_whole_blocks():
  grey = np.zeros((4, 4), np.uint8)
  grey[:2, :2] = 200  # One 2x2 block bright: area averaging keeps it a whole bright pixel.
  out = np.asarray(resize.area_resize(Image.fromarray(grey), 2))
  np.testing.assert_array_equal(out, [[200, 0], [0, 0]])


def test_growing_is_bilinear_and_the_right_size_is_untouched():
  image = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8))
  grown = resize.area_resize(image, 8)
  np.testing.assert_array_equal(np.asarray(grown), np.asarray(image.resize((8, 8), Image.Resampling.BILINEAR)))
  assert resize.area_resize(image, 2) is image
  assert preprocess.area_resize is resize.area_resize  # One function for preprocessing and the lung U-Net.
