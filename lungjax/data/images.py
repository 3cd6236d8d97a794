"""Decode image files of any PIL mode to RGB uint8 at a fixed size, once, with errors that name the file."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from lungjax.data.folders import Record

# Only the decoders lungjax needs are ever opened: this limits exposure to Pillow's other decoders.
PIL_FORMATS = ('JPEG', 'PNG')
_SIXTEEN_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I')


class BadImageError(ValueError):
  """An image file that cannot be decoded; the message names the file."""

  def __init__(self, path: str, reason: str):
    super().__init__(f'cannot decode image {path!r}: {reason}')
    self.path = path
    self.reason = reason


def to_rgb_uint8(image: Image.Image) -> np.ndarray:
  """Converts a PIL image of any mode to an HxWx3 uint8 array (EXIF rotation applied, alpha over black)."""
  image = ImageOps.exif_transpose(image)
  if image.mode in _SIXTEEN_BIT_MODES or image.mode == 'F':
    values = np.asarray(image, dtype=np.float64)
    scale = 255.0 / 65535.0 if image.mode != 'F' else 255.0
    if image.mode == 'I' and values.max(initial=0) <= 255:
      scale = 1.0  # An 8-bit image stored as 32-bit integers.
    grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  if image.mode == 'P' and 'transparency' in image.info:
    image = image.convert('RGBA')
  if image.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):
    rgba = np.asarray(image.convert('RGBA'), dtype=np.float32)
    rgb = rgba[..., :3] * (rgba[..., 3:] / 255.0)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
  return np.asarray(image.convert('RGB'), dtype=np.uint8)


THUMBNAIL_SIZE = 32


def grey_thumbnail(pixels_HWC: np.ndarray) -> np.ndarray:
  """Returns a THUMBNAIL_SIZE^2 float32 vector of the grey image: what near-copy detection compares."""
  grey = Image.fromarray(pixels_HWC).convert('L').resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.BILINEAR)
  return np.asarray(grey, np.float32).reshape(-1)


@dataclasses.dataclass(frozen=True)
class LoadedImage:
  """One decoded file: resized pixels, a hash of its full-size pixels, and its grey thumbnail."""

  pixels_HWC: np.ndarray  # size x size x 3 uint8
  pixel_hash: str  # sha256 of the full-size decoded pixels (and shape): equal for exact copies.
  thumbnail: np.ndarray  # THUMBNAIL_SIZE^2 float32 grey values in [0, 255].


def load_image(path: str, size: int) -> LoadedImage:
  """Decodes one file once into its resized pixels, full-size pixel hash and grey thumbnail."""
  if os.path.getsize(path) == 0:
    raise BadImageError(path, 'the file is empty')
  try:
    with Image.open(path, formats=PIL_FORMATS) as image:
      if image.width * image.height > (Image.MAX_IMAGE_PIXELS or float('inf')):  # Pillow only warns up to 2x.
        raise Image.DecompressionBombError(f'{image.width}x{image.height} pixels, more than PIL.Image.MAX_IMAGE_PIXELS'
                                           f'={Image.MAX_IMAGE_PIXELS}')
      image.load()
      pixels = to_rgb_uint8(image)
  except Image.DecompressionBombError as error:
    raise BadImageError(path, f'too many pixels ({error})') from error
  except Image.UnidentifiedImageError as error:
    raise BadImageError(path, f'not a {"/".join(PIL_FORMATS)} image') from error
  except (OSError, SyntaxError, ValueError) as error:  # Truncated or corrupt data.
    raise BadImageError(path, str(error) or type(error).__name__) from error
  digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes())
  digest.update(repr(pixels.shape).encode())
  resized = Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR)
  return LoadedImage(np.asarray(resized, dtype=np.uint8), digest.hexdigest(), grey_thumbnail(pixels))


@dataclasses.dataclass(frozen=True)
class DecodedImages:
  """Decoded, resized images of a list of records, and the files that were skipped."""

  images_NHWC: np.ndarray  # uint8; or prepared.PreparedImages, read from disk per batch.
  labels_N: np.ndarray  # int32
  paths: tuple[str, ...]
  pixel_hashes: tuple[str, ...]  # sha256 of the full-size decoded pixels: equal for exact copies.
  thumbnails_ND: np.ndarray  # float32 grey thumbnails (see grey_thumbnail), for near-copy detection.
  skipped: tuple[tuple[str, str], ...]  # (path, reason) of each undecodable file.

  def __len__(self) -> int:
    return len(self.paths)

  def subset(self, indices: Sequence[int]) -> DecodedImages:
    """Returns the images at `indices` (skipped files stay listed); pixels on disk (prepared data) stay there."""
    indices = np.asarray(indices, dtype=np.int64)
    images_NHWC = self.images_NHWC.subset(indices) if hasattr(self.images_NHWC, 'subset') else self.images_NHWC[indices]
    return DecodedImages(
        images_NHWC, self.labels_N[indices], tuple(self.paths[i] for i in indices),
        tuple(self.pixel_hashes[i] for i in indices), self.thumbnails_ND[indices], self.skipped)


def decode_records(
    records: Sequence[Record], size: int, *, skip_bad_images: bool = False, threads: int = 0
) -> DecodedImages:
  """Decodes every record once (threads run PIL's decoders in parallel); bad files raise or are skipped."""
  threads = threads or os.cpu_count() or 1
  images = np.zeros((len(records), size, size, 3), np.uint8)
  thumbnails = np.zeros((len(records), THUMBNAIL_SIZE**2), np.float32)
  kept, hashes, skipped = [], [], []
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    futures = [pool.submit(load_image, record.path, size) for record in records]
    for index, future in enumerate(futures):
      try:
        loaded = future.result()
      except BadImageError as error:
        if not skip_bad_images:
          for pending in futures:
            pending.cancel()
          raise BadImageError(error.path, error.reason + ' (set config.data.skip_bad_images=True to skip it)'
                              ) from error
        skipped.append((error.path, error.reason))
        continue
      images[len(kept)] = loaded.pixels_HWC
      thumbnails[len(kept)] = loaded.thumbnail
      kept.append(records[index])
      hashes.append(loaded.pixel_hash)
  return DecodedImages(
      images_NHWC=images[:len(kept)],
      labels_N=np.asarray([r.label for r in kept], np.int32),
      paths=tuple(r.path for r in kept),
      pixel_hashes=tuple(hashes),
      thumbnails_ND=thumbnails[:len(kept)],
      skipped=tuple(skipped))
