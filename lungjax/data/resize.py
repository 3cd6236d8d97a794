"""Resizing shared by preprocessing and the lung U-Net: area-averaged where a side shrinks."""

from __future__ import annotations

from PIL import Image


def area_resize(image: Image.Image, size: int) -> Image.Image:
  """size x size: area-averaged (BOX) where a side shrinks, bilinear where it grows (aspect ratio not kept)."""
  if image.size == (size, size):
    return image
  shrinks = image.width >= size and image.height >= size
  return image.resize((size, size), Image.Resampling.BOX if shrinks else Image.Resampling.BILINEAR)
