"""Decode image files of any PIL mode to RGB uint8 at a fixed size, once, with errors that name the file.

Deep grey PNGs (Pillow modes I;16, I;16B, I) are scaled by their real bit depth (see `sixteen_bit_scale`; without
sBIT, robust to a few saturated pixels: `robust_sixteen_bit_scale`), float (mode F) images are read on Pillow's
0..255 scale (`float_range`), and
files that decode to little information (blank, low contrast, tiny) are logged and listed as warnings. Decoding is
bounded: no full-size float or converted copies (images are converted, hashed and resized strip by strip, with the
same pixels as converting and resizing the whole image), and the decodes in flight (every thread pool together) hold
at most DECODE_MEMORY_BUDGET bytes (see DecodeBudget).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import struct
import threading
from collections.abc import Iterator, Sequence

import numpy as np
from absl import logging
from PIL import ExifTags, Image, ImageOps

from lungjax.runtime import progress
from lungjax.data import decoding, dicom, preprocess as preprocess_lib
# Re-exported: these are images.BadImageError etc. to every caller; data/decoding.py defines them (dicom.py shares them).
from lungjax.data.decoding import (  # pylint: disable=unused-import
    COMMON_BIT_DEPTHS, DECODE_MEMORY_BUDGET, OUTLIER_FRACTION, WARNINGS_INFO_KEY, BadImageError, DecodeBudget)
from lungjax.data.folders import Record

# Only the decoders lungjax needs are ever opened: this limits exposure to Pillow's other decoders.
PIL_FORMATS = ('JPEG', 'PNG')
_SIXTEEN_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I')
_GREY_MODES = ('1', 'L', 'F') + _SIXTEEN_BIT_MODES  # Converted to one 8-bit band (to_rgb_uint8 repeats it).
# Warnings: an image whose grey levels (after scaling to 8 bits) span less than 1/16 of 0..255, or with a side
# shorter than MIN_SIDE pixels, carries little for the model to read, yet would get a confident prediction.
LOW_RANGE_FRACTION = 1 / 16
MIN_SIDE = 32
# Images are converted this many pixels at a time (a strip of rows): bounds the scratch memory of a conversion.
STRIP_PIXELS = 1 << 20
_ROTATED = range(2, 9)  # EXIF orientations that ImageOps.exif_transpose acts on.


def decode_bytes_estimate(width: int, height: int, mode: str) -> int:
  """The bytes one load_image of a width x height image of PIL `mode` holds at most, from its header.

  PIL stores 1 byte a pixel for modes 1, L, P, 2 for I;16*, 4 for the rest. The decoded image is held with, at most,
  one more of: its EXIF-rotated copy (as big), or its 8-bit copy (none for L and RGB; 1 byte a pixel for grey
  modes, 4 for the rest), or for RGB the grey copy the thumbnail reads (1). Conversions add strips of STRIP_PIXELS
  pixels (under 48 bytes a pixel of scratch).
  """
  stored = 1 if mode in ('1', 'L', 'P') else 2 if mode.startswith('I;16') else 4
  converted = 0 if mode in ('L', 'RGB') else 1 if mode in _GREY_MODES else 4
  return width * height * (stored + max(stored, converted)) + 48 * STRIP_PIXELS


def _read_significant_bits(f) -> int | None:
  """Reads a PNG's grey sBIT from a binary file object at its start (see png_significant_bits)."""
  if f.read(8) != b'\x89PNG\r\n\x1a\n':
    return None
  while True:
    header = f.read(8)
    if len(header) < 8:
      return None
    length, chunk_type = struct.unpack('>I4s', header)
    if chunk_type == b'sBIT':
      data = f.read(min(length, 4))
      return data[0] if length >= 1 and len(data) >= 1 and 1 <= data[0] <= 16 else None
    if chunk_type in (b'PLTE', b'IDAT', b'IEND'):
      return None
    f.seek(length + 4, os.SEEK_CUR)  # The chunk's data and CRC.


def png_significant_bits(path: str) -> int | None:
  """The grey sample's significant bits from a PNG's sBIT chunk (1-16), or None when it has none or is not a PNG.

  Pillow reads past sBIT without keeping it. The chunk precedes PLTE and IDAT, so only the chunk headers before
  them are read (other chunks' data is skipped), never the image data.
  """
  with open(path, 'rb') as f:
    return _read_significant_bits(f)


def sixteen_bit_scale(maximum: int, significant_bits: int | None = None) -> tuple[int, str]:
  """The value that maps to 255 for a deep grey image (Pillow modes I;16*, I) with this maximum, and how it was chosen.

  With a PNG sBIT chunk of n bits: 2^n - 1 when the data fits in n bits (the n-bit values stored as they are, as
  most DICOM converters do), else 65535 (the values were scaled up to 16 bits, as the PNG specification asks).
  Without one: 2^b - 1 for the smallest b of COMMON_BIT_DEPTHS (8, 10, 12, 14, 16) that holds the maximum, so
  12-bit data is not 16x too dark (a 16-bit image that is really that dark is brightened: add sBIT to keep it
  dark); values beyond 16 bits (mode I) use the maximum's bit length. Negative values become 0.
  """
  maximum = max(int(maximum), 0)
  if significant_bits:
    bits = significant_bits if maximum < 1 << significant_bits else 16
    return (1 << bits) - 1, f'{bits}-bit (sBIT {significant_bits})'
  bits = next((b for b in COMMON_BIT_DEPTHS if maximum < 1 << b), maximum.bit_length())
  return (1 << bits) - 1, f'{bits}-bit (maximum {maximum}, no sBIT chunk)'


def robust_sixteen_bit_scale(maximum: int, counts_above: Sequence[int], pixels: int) -> tuple[int, str, int]:
  """sixteen_bit_scale without sBIT, robust to saturated outliers: (full scale, how it was chosen, pixels clipped).

  counts_above[i]: how many pixels exceed 2^COMMON_BIT_DEPTHS[i] - 1. When all but at most max(1, OUTLIER_FRACTION
  of the pixels) fit in a smaller depth b of COMMON_BIT_DEPTHS than the maximum does, the scale is 2^b - 1 for the
  smallest such b and those few pixels are clipped to white (and warned about): one saturated pixel (65535) in
  12-bit data no longer darkens the whole image 16x. Give the PNG an sBIT chunk to have its depth read as written.
  """
  full_scale, note = sixteen_bit_scale(maximum)
  allowance = max(1, int(pixels * OUTLIER_FRACTION))
  for bits, count in zip(COMMON_BIT_DEPTHS, counts_above):
    scale = (1 << bits) - 1
    if scale >= full_scale:
      break
    if count <= allowance:
      return scale, (f'{bits}-bit ({count} pixel(s) above {scale}, up to {max(int(maximum), 0)}: at most '
                     f'{OUTLIER_FRACTION:.1%} of the image; no sBIT chunk)'), count
  return full_scale, note, 0


def _significant_bits_of(image: Image.Image) -> int | None:
  """sBIT of a PNG image opened from a file name, or from a file object that is still open; else None."""
  if image.format != 'PNG':
    return None
  filename = getattr(image, 'filename', '')
  if filename and os.path.isfile(filename):
    return png_significant_bits(filename)
  fp = getattr(image, 'fp', None)
  if fp is None or getattr(fp, 'closed', False) or not fp.seekable():
    return None
  position = fp.tell()
  try:
    fp.seek(0)
    return _read_significant_bits(fp)
  finally:
    fp.seek(position)


# _OVER_BLACK[alpha * 256 + colour]: the float32 rint(colour * (alpha / 255.0)) of every pair (the formula lungjax
# always used, so pixel hashes stay the same), looked up: no float copies.
_LEVELS = np.arange(256, dtype=np.float32)
_OVER_BLACK = np.clip(np.rint(_LEVELS[None, :] * (_LEVELS[:, None] / 255.0)), 0, 255).astype(np.uint8).reshape(-1)


@dataclasses.dataclass(frozen=True)
class _Conversion:
  """How strips of one image become uint8: grey (H x W) or RGB (H x W x 3), today's formula for every mode."""

  mode: str
  full_scale: int = 0  # Deep grey modes: the value that maps to 255.
  span: int = 0  # Deep grey modes: the maximum minus the minimum (of values clipped at 0).
  note: str = ''  # Deep grey modes: how full_scale was chosen (for warnings).
  clipped: int = 0  # Deep grey modes: pixels above full_scale clipped as saturated outliers (warned about).

  def __call__(self, strip: Image.Image) -> np.ndarray:
    mode = strip.mode
    if mode in _SIXTEEN_BIT_MODES:  # Integer rounding (half up; v * 255 / (2^b - 1) is never exactly half).
      values = np.asarray(strip).astype(np.int64)
      return np.clip((values * 510 + self.full_scale) // (2 * self.full_scale), 0, 255).astype(np.uint8)
    if mode == 'F':  # Floats on Pillow's 0..255 scale (checked by _float_range): rounded, as convert('F') made them.
      return np.clip(np.rint(np.asarray(strip, dtype=np.float64)), 0, 255).astype(np.uint8)
    if mode in ('L', '1'):  # The rest of _GREY_MODES.
      return np.asarray(strip.convert('L'), dtype=np.uint8)
    if mode == 'P' and 'transparency' in strip.info:
      strip = strip.convert('RGBA')
    if strip.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):  # Alpha over black: rint(colour * (alpha / 255)).
      rgba = np.asarray(strip.convert('RGBA'), dtype=np.uint8)
      return _OVER_BLACK[(rgba[..., 3:].astype(np.uint16) << 8) | rgba[..., :3]]
    return np.asarray(strip.convert('RGB'), dtype=np.uint8)


class AmbiguousFloatImageError(ValueError):
  """A float (PIL mode F) image whose values are not plainly on the 0..255 scale lungjax reads floats on."""


def float_range(image: Image.Image) -> tuple[float, float]:
  """(min, max) of a PIL mode-F image, after checking that its values are on the 0..255 scale lungjax reads.

  lungjax reads float images on Pillow's own scale, 0..255: what `Image.convert('F')` makes of an 8-bit image and
  what `convert('L')` reads back, so `image.convert('L').convert('F')` decodes to the very pixels of the 8-bit image
  (values are rounded to the nearest grey level). Refused (AmbiguousFloatImageError, saying what to do): any pixel
  that is not finite (NaN, inf); values below 0 or above 255 (another scale: map them to 0..255 first); and images
  whose values all lie in 0..1 with a maximum above 0, which are far more likely a [0, 1] image than a nearly
  black 0..255 one (multiply by 255 first). Read strip by strip: no full-size float copy.
  """
  low, high, bad, total = np.inf, -np.inf, 0, 0
  for _, strip in _strips(image):
    values = np.asarray(strip, dtype=np.float32)
    finite = np.isfinite(values)
    bad += int(values.size - np.count_nonzero(finite))
    total += values.size
    if finite.any():
      low, high = min(low, float(values[finite].min())), max(high, float(values[finite].max()))
  if total == 0:
    raise AmbiguousFloatImageError('a float (mode F) image with no pixels')
  if bad:
    raise AmbiguousFloatImageError(f'{bad} of {total} pixels of the float (mode F) image are not finite (NaN or '
                                   'infinite): there is no picture to read there')
  if low < 0 or high > 255:
    raise AmbiguousFloatImageError(
        f'float (mode F) values span {low:g}..{high:g}: lungjax reads float images on Pillow\'s 0..255 scale (as '
        'convert(\'F\') makes them); map the values to 0..255 (or convert to an 8-bit \'L\' image) first')
  if 0 < high <= 1:
    raise AmbiguousFloatImageError(
        f'float (mode F) values all lie in 0..1 (maximum {high:g}): lungjax reads float images on Pillow\'s 0..255 '
        'scale (as convert(\'F\') makes them), where this is a nearly black image; if it is a [0, 1] image, '
        'multiply it by 255 first (or convert to an 8-bit \'L\' image)')
  return low, high


def _conversion(image: Image.Image, significant_bits: int | None) -> _Conversion:
  """The conversion of a loaded image (deep grey modes: scaled by sixteen_bit_scale of its maximum; mode F:
  checked by float_range)."""
  if image.mode == 'F':
    float_range(image)
  if image.mode not in _SIXTEEN_BIT_MODES:
    return _Conversion(image.mode)
  try:
    minimum, maximum = image.getextrema()
  except ValueError:  # Pillow has no extrema for I;16B: read the values a strip at a time.
    values = [np.asarray(strip) for _, strip in _strips(image)]
    minimum, maximum = min(int(v.min()) for v in values), max(int(v.max()) for v in values)
  if significant_bits:
    full_scale, note = sixteen_bit_scale(maximum, significant_bits)
    clipped = 0
  else:
    thresholds = np.asarray([(1 << b) - 1 for b in COMMON_BIT_DEPTHS], np.int64)
    counts = np.zeros(len(thresholds), np.int64)
    for _, strip in _strips(image):
      values = np.asarray(strip).reshape(-1)
      counts += np.count_nonzero(values[:, None] > thresholds[None, :], axis=0) if values.size else 0
    full_scale, note, clipped = robust_sixteen_bit_scale(maximum, counts.tolist(), image.width * image.height)
  span = min(max(int(maximum), 0), full_scale) - max(int(minimum), 0)
  return _Conversion(image.mode, full_scale, span, f'{image.mode} data scaled as {note}', clipped)


def _strips(image: Image.Image) -> Iterator[tuple[int, Image.Image]]:
  """Yields (top row, strip): whole rows, about STRIP_PIXELS pixels a strip."""
  width, height = image.size
  rows = max(1, STRIP_PIXELS // max(width, 1))
  for top in range(0, height, rows):
    yield top, image.crop((0, top, width, min(height, top + rows)))


def _upright(image: Image.Image) -> Image.Image:
  """The image as displayed (EXIF/XMP orientation applied): itself when not rotated (no copy), else a rotated copy."""
  if image.getexif().get(ExifTags.Base.Orientation, 1) in _ROTATED:
    return ImageOps.exif_transpose(image)
  return image


def to_rgb_uint8(image: Image.Image, significant_bits: int | None = None) -> np.ndarray:
  """Converts a PIL image of any mode to an HxWx3 uint8 array (EXIF rotation applied, alpha over black).

  Deep grey images (I;16*, I) are scaled by sixteen_bit_scale: `significant_bits` is the PNG's sBIT, read from the
  image's file when not given (pass it for an image opened from bytes that are no longer open). Mode F (float) is
  read on Pillow's 0..255 scale and rounded; non-finite, out-of-range and all-in-0..1 float images are refused (see
  float_range). An image with no pixels (0 x N) is refused (ValueError). Works strip by strip: no full-size float
  copy. load_image hashes exactly these pixels.
  """
  if image.width == 0 or image.height == 0:
    raise ValueError(f'a {image.width}x{image.height} image has no pixels')
  if significant_bits is None and image.mode in _SIXTEEN_BIT_MODES:
    significant_bits = _significant_bits_of(image)
  image = _upright(image)
  convert = _conversion(image, significant_bits)
  pixels = np.empty((image.height, image.width, 3), np.uint8)
  for top, strip in _strips(image):
    values = convert(strip)
    pixels[top:top + values.shape[0]] = values[..., None] if values.ndim == 2 else values
  return pixels


THUMBNAIL_SIZE = 32


def grey_thumbnail(pixels_HWC: np.ndarray) -> np.ndarray:
  """Returns a THUMBNAIL_SIZE^2 float32 vector of the grey image: what near-copy detection compares."""
  grey = Image.fromarray(pixels_HWC).convert('L').resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.BILINEAR)
  return np.asarray(grey, np.float32).reshape(-1)


@dataclasses.dataclass(frozen=True)
class LoadedImage:
  """One decoded file: resized pixels, a hash of its full-size pixels, its grey thumbnail, and what looks wrong."""

  pixels_HWC: np.ndarray  # size x size x 3 uint8
  pixel_hash: str  # sha256 of the full-size decoded pixels (and shape): equal for exact copies.
  thumbnail: np.ndarray  # THUMBNAIL_SIZE^2 float32 grey values in [0, 255].
  # Why the image may carry little information (blank, low contrast, tiny); logged once per file. Empty if none.
  warnings: tuple[str, ...] = ()
  size_HW: tuple[int, int] = (0, 0)  # The decoded file's own height and width (after its EXIF rotation).


_logged_warnings: set[tuple[str, str]] = set()
_logged_lock = threading.Lock()


def _log_once(path: str, warning: str) -> None:
  """logging.warning naming the file, once per (file, warning) in this process."""
  with _logged_lock:
    if (path, warning) in _logged_warnings:
      return
    _logged_warnings.add((path, warning))
  logging.warning('image %r: %s', path, warning)


def _extrema(image: Image.Image) -> list[tuple[int, int]]:
  """(min, max) of each band of an L or RGB image."""
  extrema = image.getextrema()
  return [extrema] if image.mode == 'L' else list(extrema)


@dataclasses.dataclass
class _EightBit:
  """A loaded image as lungjax reads it: L or RGB (to_rgb_uint8's pixels), its hash, band extrema and scaling note."""

  image: Image.Image  # The decoded image itself when it is L or RGB, else a converted copy.
  pixel_hash: str  # sha256 of the H x W x 3 uint8 pixels, then of repr((H, W, 3)).
  extrema: list[tuple[int, int]]  # (min, max) of each band.
  conversion: _Conversion


def _eight_bit(image: Image.Image, significant_bits: int | None) -> _EightBit:
  """Converts (L and RGB images: only reads) a loaded, upright image strip by strip: no full-size float copy."""
  width, height = image.size
  convert = _conversion(image, significant_bits)
  digest = hashlib.sha256()
  extrema = None
  converted = None
  for top, strip in _strips(image):
    values = convert(strip)
    digest.update(np.ascontiguousarray(np.repeat(values[..., None], 3, axis=-1) if values.ndim == 2 else values).data)
    part = Image.fromarray(values)
    bands = _extrema(part)
    extrema = bands if extrema is None else [(min(a, c), max(b, d)) for (a, b), (c, d) in zip(extrema, bands)]
    if image.mode not in ('L', 'RGB'):
      if converted is None:
        converted = Image.new(part.mode, (width, height))
      converted.paste(part, (0, top))
  digest.update(repr((height, width, 3)).encode())
  return _EightBit(image if converted is None else converted, digest.hexdigest(), extrema, convert)


def _warnings(width: int, height: int, eight_bit: _EightBit) -> tuple[str, ...]:
  """Why an image may carry little information: a side under MIN_SIDE, one value everywhere, or a narrow range.

  The range is the largest band's max - min in 8 bits, or for deep grey modes the values' own span against the full
  scale they were given (so 12-bit data marked 16-bit by sBIT is low contrast: 4095 of 65535).
  """
  warnings = []
  if min(width, height) < MIN_SIDE:
    warnings.append(f'tiny: {width}x{height} pixels (a side under {MIN_SIDE})')
  lows = tuple(low for low, _ in eight_bit.extrema)
  span = max(high - low for low, high in eight_bit.extrema)
  conversion = eight_bit.conversion
  scaled = f' ({conversion.note})' if conversion.note else ''
  if conversion.clipped:
    warnings.append(f'saturated outliers: {conversion.clipped} pixel(s) clipped to white{scaled}')
  if span == 0:
    warnings.append(f'blank: every pixel is {lows[0] if len(lows) == 1 else lows}{scaled}')
  elif conversion.full_scale and conversion.span < conversion.full_scale * LOW_RANGE_FRACTION:
    warnings.append(f'low contrast: its values span {conversion.span} of {conversion.full_scale} (under '
                    f'{LOW_RANGE_FRACTION:.4g} of the range){scaled}')
  elif not conversion.full_scale and span < 255 * LOW_RANGE_FRACTION:
    warnings.append(f'low contrast: its grey levels span {span} of 255 (under {LOW_RANGE_FRACTION:.4g} of the '
                    f'range)')
  return tuple(warnings)


def open_image(path: str) -> Image.Image:
  """Opens a JPEG or PNG lazily, or decodes a DICOM file (.dcm, .dicom: lungjax.data.dicom) to its 8-bit image."""
  if dicom.is_dicom_path(path):
    return dicom.load(path)[0]
  return Image.open(path, formats=PIL_FORMATS)


def load_image(path: str, size: int, preprocess: preprocess_lib.PreprocessSettings | None = None) -> LoadedImage:
  """Decodes one file once into its resized pixels, full-size pixel hash, grey thumbnail and warnings.

  The decode first reserves decode_bytes_estimate of its header from `decoding.decode_budget` (so concurrent decodes stay
  within DECODE_MEMORY_BUDGET). The pixels, hash and thumbnail are exactly those of to_rgb_uint8's full-size array
  resized (and grey_thumbnail), computed without that array: L and RGB images are read in place, other modes are
  converted strip by strip and the decoded image is freed before resizing. Warnings (blank, low contrast, tiny)
  are logged once per file and returned. `preprocess` (config.data.preprocess, data/preprocess.py; None: every step
  off) makes the resized pixels; the hash and thumbnail stay those of the file's own pixels (copies are found alike).
  """
  try:
    if os.path.getsize(path) == 0:  # Inside the try: a dangling link or a file gone since the scan is named too.
      raise BadImageError(path, 'the file is empty')
    with open_image(path) as image:
      if image.width == 0 or image.height == 0:
        raise BadImageError(path, f'a {image.width}x{image.height} image has no pixels')
      if image.format == 'PNG' and getattr(image, 'n_frames', 1) > 1:  # As a multi-frame DICOM is refused.
        raise BadImageError(path, f'an animated PNG (APNG, {image.n_frames} frames): lungjax reads single-frame '
                                  'images only, and would otherwise take the first frame silently')
      if image.width * image.height > (Image.MAX_IMAGE_PIXELS or float('inf')):  # Pillow only warns up to 2x.
        raise Image.DecompressionBombError(f'{image.width}x{image.height} pixels, more than PIL.Image.MAX_IMAGE_PIXELS'
                                           f'={Image.MAX_IMAGE_PIXELS}')
      significant_bits = png_significant_bits(path) if image.mode in _SIXTEEN_BIT_MODES else None
      with decoding.decode_budget.reserve(decode_bytes_estimate(image.width, image.height, image.mode)):
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # No copy when there is no rotation.
        width, height = image.size
        eight_bit = _eight_bit(image, significant_bits)
        if eight_bit.image is not image:
          image.close()  # Frees the decoded pixels: only the converted copy is resized.
        source = eight_bit.image
        pixels_SSC = preprocess_lib.preprocess_image(source, preprocess or preprocess_lib.PreprocessSettings(), size)
        grey = source if source.mode == 'L' else source.convert('L')
        thumbnail = grey.resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.BILINEAR)
        del grey, source
        warnings = tuple(image.info.get(WARNINGS_INFO_KEY, ())) + _warnings(width, height, eight_bit)
  except BadImageError:
    raise
  except Image.DecompressionBombError as error:
    raise BadImageError(path, f'too many pixels ({error})') from error
  except Image.UnidentifiedImageError as error:
    raise BadImageError(path, f'not a {"/".join(PIL_FORMATS)} image') from error
  except (OSError, SyntaxError, ValueError) as error:  # Truncated or corrupt data.
    raise BadImageError(path, str(error) or type(error).__name__) from error
  for warning in warnings:
    _log_once(path, warning)
  return LoadedImage(pixels_SSC, eight_bit.pixel_hash,
                     np.asarray(thumbnail, np.float32).reshape(-1), warnings, (height, width))


@dataclasses.dataclass(frozen=True)
class DecodedImages:
  """Decoded, resized images of a list of records, the files that were skipped, and the images' warnings."""

  images_NHWC: np.ndarray  # uint8; or prepared.PreparedImages, read from disk per batch.
  labels_N: np.ndarray  # int32
  paths: tuple[str, ...]
  pixel_hashes: tuple[str, ...]  # sha256 of the full-size decoded pixels: equal for exact copies.
  thumbnails_ND: np.ndarray  # float32 grey thumbnails (see grey_thumbnail), for near-copy detection.
  skipped: tuple[tuple[str, str], ...]  # (path, reason) of each undecodable file.
  warnings: tuple[tuple[str, str], ...] = ()  # (path, warning) of decoded images (LoadedImage.warnings).
  sources_N: np.ndarray | None = None  # int32 index into source_names of each image's source (data/sources.py).
  source_names: tuple[str, ...] = ()

  def __len__(self) -> int:
    return len(self.paths)

  def subset(self, indices: Sequence[int]) -> DecodedImages:
    """Returns the images at `indices` (skipped files stay listed); pixels on disk (prepared data) stay there."""
    indices = np.asarray(indices, dtype=np.int64)
    images_NHWC = self.images_NHWC.subset(indices) if hasattr(self.images_NHWC, 'subset') else self.images_NHWC[indices]
    return DecodedImages(
        images_NHWC, self.labels_N[indices], tuple(self.paths[i] for i in indices),
        tuple(self.pixel_hashes[i] for i in indices), self.thumbnails_ND[indices], self.skipped, self.warnings,
        None if self.sources_N is None else self.sources_N[indices], self.source_names)


def decode_records(
    records: Sequence[Record], size: int, *, skip_bad_images: bool = False, threads: int = 0,
    preprocess: preprocess_lib.PreprocessSettings | None = None
) -> DecodedImages:
  """Decodes every record once (threads run PIL's decoders in parallel); bad files raise or are skipped.

  preprocess: config.data.preprocess's steps (preprocess.settings_of), None for none.
  threads=0 means one per CPU core; however many, the decodes in flight share `decoding.decode_budget`'s memory.
  """
  threads = threads or os.cpu_count() or 1
  images = np.zeros((len(records), size, size, 3), np.uint8)
  thumbnails = np.zeros((len(records), THUMBNAIL_SIZE**2), np.float32)
  kept, hashes, skipped, warnings = [], [], [], []
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    futures = [pool.submit(load_image, record.path, size, preprocess) for record in records]
    for index, future in enumerate(progress.progress(futures, len(futures), 'decoding')):
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
      warnings += [(records[index].path, warning) for warning in loaded.warnings]
  return DecodedImages(
      images_NHWC=images[:len(kept)],
      labels_N=np.asarray([r.label for r in kept], np.int32),
      paths=tuple(r.path for r in kept),
      pixel_hashes=tuple(hashes),
      thumbnails_ND=thumbnails[:len(kept)],
      skipped=tuple(skipped),
      warnings=tuple(warnings))
