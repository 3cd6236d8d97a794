"""Seeded on-device augmentation of training batches, and a command that draws a batch before and after.

python -m lungjax.data.augment --config=configs/cnn_augment.py --config.data.root=ROOT --out=FILE.png [--seed=0]
  [--per_op]  (one row per op, each alone)

Each example draws its own rotation, zoom, shift and (off by default) horizontal flip, composed into one
affine warp (bilinear, black fill like an X-ray border), after a brightness and contrast change. Images keep
their dtype and [0, 255] range, so a model sees augmented images exactly like plain ones.

Augmentation aimed at sources (issue 23 part 4; each op off unless its probability is above 0): a random resized
crop (composed into the same warp), gamma, resolution jitter (area-averaged down to one of resolution_factors of
the side, bilinear back up), Gaussian blur, Gaussian noise and random border padding (the image shrunk into a
canvas of a random grey level, like a letterboxed or framed film); all on device, in that order after brightness
and contrast. JPEG re-encoding at a random quality runs on the host (PIL), in the training input pipeline before
the batch reaches the device (host_augment_fn: grain's random_map, seeded by config.seed and the batch's index, so
a resumed run re-draws the same qualities); it is not a test-time view.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from PIL import Image

from lungjax.runtime import workdir as workdir_lib
from lungjax.data import loading, pipeline

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

PIXEL_MAX = 255.0  # uint8 and float images alike are on the [0, 255] scale the models rescale themselves.
_PROBABILITIES = ('rotation_prob', 'zoom_prob', 'shift_prob', 'hflip_prob', 'brightness_prob', 'contrast_prob',
                  'crop_prob', 'gamma_prob', 'resolution_prob', 'blur_prob', 'noise_prob', 'pad_prob', 'jpeg_prob')
MAX_BLUR_SIGMA = 4.0  # Pixels: the blur kernel's radius (3 sigma) is fixed when the step is compiled.
# Each (low, high) range field: which pairs are allowed, and what they mean.
_RANGES = {
    'rotation_degrees': (lambda low, high: True, 'degrees, counter-clockwise'),
    'zoom_range': (lambda low, high: low > 0, 'scale factors > 0, above 1 zooms in'),
    'shift_fraction': (lambda low, high: -1 <= low and high <= 1,
                       'fractions of the height and width in [-1, 1], positive moves down and right'),
    'brightness_delta': (lambda low, high: -1 <= low and high <= 1, f'fractions of {PIXEL_MAX:g} added, in [-1, 1]'),
    'contrast_range': (lambda low, high: low >= 0, 'factors >= 0 about each image\'s mean'),
    'crop_scale': (lambda low, high: 0 < low and high <= 1, 'fractions of the image\'s area in (0, 1]'),
    'crop_ratio': (lambda low, high: low > 0, 'width / height ratios of the crop, > 0'),
    'gamma_range': (lambda low, high: low > 0, 'exponents > 0 of the [0, 1] intensity (below 1 brightens)'),
    'blur_sigma': (lambda low, high: low >= 0 and high <= MAX_BLUR_SIGMA,
                   f'Gaussian standard deviations in pixels, in [0, {MAX_BLUR_SIGMA:g}]'),
    'noise_std': (lambda low, high: low >= 0 and high <= 1, f'standard deviations as fractions of {PIXEL_MAX:g}'),
    'pad_fraction': (lambda low, high: low >= 0 and high < 0.5, 'fractions of the side padded on each edge, < 0.5'),
    'jpeg_quality': (lambda low, high: 1 <= low and high <= 100, 'JPEG qualities in [1, 100]'),
}


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
  """config.augment as plain Python floats: what augment_batch binds before jit."""

  enabled: bool
  rotation_prob: float
  rotation_degrees: tuple[float, float]
  zoom_prob: float
  zoom_range: tuple[float, float]
  shift_prob: float
  shift_fraction: tuple[float, float]
  hflip_prob: float
  brightness_prob: float
  brightness_delta: tuple[float, float]
  contrast_prob: float
  contrast_range: tuple[float, float]
  crop_prob: float = 0.0
  crop_scale: tuple[float, float] = (0.6, 1.0)
  crop_ratio: tuple[float, float] = (0.8, 1.25)
  gamma_prob: float = 0.0
  gamma_range: tuple[float, float] = (0.7, 1.5)
  resolution_prob: float = 0.0
  resolution_factors: tuple[float, ...] = (0.25, 0.5, 0.75)
  blur_prob: float = 0.0
  blur_sigma: tuple[float, float] = (0.3, 1.5)
  noise_prob: float = 0.0
  noise_std: tuple[float, float] = (0.0, 0.04)
  pad_prob: float = 0.0
  pad_fraction: tuple[float, float] = (0.0, 0.12)
  jpeg_prob: float = 0.0  # Host-side (host_augment_fn), not in augment_batch.
  jpeg_quality: tuple[float, float] = (20.0, 95.0)

  @property
  def warps(self) -> bool:
    """True when any geometric op can fire (otherwise the warp is skipped)."""
    return any(p > 0 for p in (self.rotation_prob, self.zoom_prob, self.shift_prob, self.hflip_prob, self.crop_prob))

  @property
  def is_identity(self) -> bool:
    """True when no on-device op can fire: augment_batch returns its input (JPEG re-encoding is the host's)."""
    return not self.enabled or not any(getattr(self, name) > 0 for name in _PROBABILITIES if name != 'jpeg_prob')


def _pair(value: Sequence[float], field: str) -> tuple[float, float]:
  """Reads a (low, high) range field, raising ValueError that names it."""
  allowed, meaning = _RANGES[field]
  try:
    low, high = (float(v) for v in value)
  except (TypeError, ValueError) as error:
    raise ValueError(f'config.augment.{field} must be a (low, high) pair of {meaning}, got {value!r}') from error
  if not (math.isfinite(low) and math.isfinite(high) and low <= high and allowed(low, high)):
    raise ValueError(f'config.augment.{field}={value!r} is not allowed: need low <= high, {meaning}')
  return low, high


def augment_settings(augment_config: ml_collections.ConfigDict) -> AugmentSettings:
  """Validates config.augment into AugmentSettings; errors name the field."""
  given = dict(augment_config.items())  # A config.json saved before the source-aimed ops: run_fields.upgrade.
  names = [f.name for f in dataclasses.fields(AugmentSettings)]
  missing = [n for n in names if n not in given]
  unknown = sorted(set(given) - set(names))
  if missing or unknown:
    raise ValueError(f'config.augment: missing fields {missing}, unknown fields {unknown} '
                     f'(it takes {", ".join(names)})')
  values = {'enabled': bool(given['enabled'])}
  for name in _PROBABILITIES:
    prob = float(given[name])
    if not 0.0 <= prob <= 1.0:
      raise ValueError(f'config.augment.{name}={given[name]!r} must be a probability in [0, 1]')
    values[name] = prob
  values.update({name: _pair(given[name], name) for name in _RANGES})
  try:
    factors = tuple(float(f) for f in given['resolution_factors'])
  except (TypeError, ValueError) as error:
    raise ValueError(f'config.augment.resolution_factors must be a tuple of fractions of the side in (0, 1), got '
                     f'{given["resolution_factors"]!r}') from error
  if not factors or not all(0 < f < 1 for f in factors):
    raise ValueError(f'config.augment.resolution_factors={given["resolution_factors"]!r} is not allowed: need one '
                     'or more fractions of the side in (0, 1)')
  values['resolution_factors'] = factors
  return AugmentSettings(**values)


def _draw(key: jax.Array, prob: float, low_high: tuple[float, float], neutral: float,
          shape: tuple[int, ...]) -> jax.Array:
  """Per-example values: uniform in [low, high] with probability `prob`, else `neutral`."""
  apply_key, value_key = jax.random.split(key)
  applied_B = jax.random.bernoulli(apply_key, prob, shape[:1])
  values = jax.random.uniform(value_key, shape, jnp.float32, *low_high)
  return jnp.where(applied_B.reshape(shape[:1] + (1,) * (len(shape) - 1)), values, jnp.float32(neutral))


def inverse_affine(angle_degrees: jax.Array, zoom: jax.Array, shift_yx: jax.Array, flip: jax.Array,
                   height: int, width: int) -> jax.Array:
  """The 2x3 matrix taking an output (row, col, 1) to its input point, for the warp that flips (flip=-1),
  zooms, rotates counter-clockwise about the centre, then shifts; elementwise, so the identity is exact."""
  theta = jnp.deg2rad(angle_degrees)
  cos, sin = jnp.cos(theta) / zoom, jnp.sin(theta) / zoom
  centre_r, centre_c = (height - 1) / 2, (width - 1) / 2
  from_r, from_c = centre_r + shift_yx[0] * height, centre_c + shift_yx[1] * width
  row_r, row_c = cos, sin
  col_r, col_c = -flip * sin, flip * cos
  return jnp.stack([jnp.stack([row_r, row_c, centre_r - row_r * from_r - row_c * from_c]),
                    jnp.stack([col_r, col_c, centre_c - col_r * from_r - col_c * from_c])])


def warp_bilinear(image_HWC: jax.Array, inverse_23: jax.Array) -> jax.Array:
  """Samples a float image at inverse_23 @ (row, col, 1) of every output pixel; outside the image is 0."""
  height, width = image_HWC.shape[:2]
  rows_HW, cols_HW = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32),
                                  indexing='ij')
  src_r_HW = inverse_23[0, 0] * rows_HW + inverse_23[0, 1] * cols_HW + inverse_23[0, 2]
  src_c_HW = inverse_23[1, 0] * rows_HW + inverse_23[1, 1] * cols_HW + inverse_23[1, 2]
  top_HW, left_HW = jnp.floor(src_r_HW), jnp.floor(src_c_HW)
  weight_r_HW, weight_c_HW = (src_r_HW - top_HW)[..., None], (src_c_HW - left_HW)[..., None]

  def tap(r_HW, c_HW):
    """The pixels at integer (r, c), 0 outside the image."""
    inside_HW = (r_HW >= 0) & (r_HW <= height - 1) & (c_HW >= 0) & (c_HW <= width - 1)
    pixels_HWC = image_HWC[jnp.clip(r_HW, 0, height - 1).astype(jnp.int32),
                           jnp.clip(c_HW, 0, width - 1).astype(jnp.int32)]
    return jnp.where(inside_HW[..., None], pixels_HWC, 0.0)

  top_HWC = (1 - weight_c_HW) * tap(top_HW, left_HW) + weight_c_HW * tap(top_HW, left_HW + 1)
  bottom_HWC = (1 - weight_c_HW) * tap(top_HW + 1, left_HW) + weight_c_HW * tap(top_HW + 1, left_HW + 1)
  return (1 - weight_r_HW) * top_HWC + weight_r_HW * bottom_HWC


def crop_inverse(scale_B: jax.Array, ratio_B: jax.Array, offset_B2: jax.Array, height: int,
                 width: int) -> jax.Array:
  """B x 3 x 3: for each example, output (row, col, 1) of the crop resized to the full image -> its input point.

  The crop covers `scale` of the image's area with width / height `ratio` (each side at most the image's), its
  top-left corner at `offset` (fractions in [0, 1]) of the room left; pixel centres map onto pixel centres, so scale 1
  and ratio 1 are the identity.
  """
  crop_h_B = jnp.minimum(height * jnp.sqrt(scale_B / ratio_B), height)
  crop_w_B = jnp.minimum(width * jnp.sqrt(scale_B * ratio_B), width)
  top_B, left_B = offset_B2[:, 0] * (height - crop_h_B), offset_B2[:, 1] * (width - crop_w_B)
  zeros_B, ones_B = jnp.zeros_like(scale_B), jnp.ones_like(scale_B)
  sy_B, sx_B = crop_h_B / height, crop_w_B / width
  return jnp.stack([jnp.stack([sy_B, zeros_B, top_B + 0.5 * sy_B - 0.5], -1),
                    jnp.stack([zeros_B, sx_B, left_B + 0.5 * sx_B - 0.5], -1),
                    jnp.stack([zeros_B, zeros_B, ones_B], -1)], 1)


def _sample_clamped(image_HWC: jax.Array, src_r_HW: jax.Array, src_c_HW: jax.Array) -> jax.Array:
  """Bilinear samples at (src_r, src_c), the points clamped into the image (edges repeat, no black creeps in)."""
  height, width = image_HWC.shape[:2]
  src_r_HW, src_c_HW = jnp.clip(src_r_HW, 0, height - 1), jnp.clip(src_c_HW, 0, width - 1)
  top_HW, left_HW = jnp.floor(src_r_HW), jnp.floor(src_c_HW)
  wr_HW1, wc_HW1 = (src_r_HW - top_HW)[..., None], (src_c_HW - left_HW)[..., None]
  r0, c0 = top_HW.astype(jnp.int32), left_HW.astype(jnp.int32)
  r1, c1 = jnp.minimum(r0 + 1, height - 1), jnp.minimum(c0 + 1, width - 1)
  upper = (1 - wc_HW1) * image_HWC[r0, c0] + wc_HW1 * image_HWC[r0, c1]
  lower = (1 - wc_HW1) * image_HWC[r1, c0] + wc_HW1 * image_HWC[r1, c1]
  return (1 - wr_HW1) * upper + wr_HW1 * lower


def pad_border(image_HWC: jax.Array, fractions_4: jax.Array, fill: jax.Array) -> jax.Array:
  """The image shrunk into the canvas left after padding (top, bottom, left, right) `fractions_4` of the side, the
  padding filled with grey level `fill`: a letterboxed or framed film. Zero fractions are the identity."""
  height, width = image_HWC.shape[:2]
  top, bottom = fractions_4[0] * height, fractions_4[1] * height
  left, right = fractions_4[2] * width, fractions_4[3] * width
  rows_HW, cols_HW = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32),
                                  indexing='ij')
  src_r_HW = (rows_HW + 0.5 - top) * (height / (height - top - bottom)) - 0.5
  src_c_HW = (cols_HW + 0.5 - left) * (width / (width - left - right)) - 0.5
  inside_HW = (src_r_HW >= -0.5) & (src_r_HW <= height - 0.5) & (src_c_HW >= -0.5) & (src_c_HW <= width - 0.5)
  return jnp.where(inside_HW[..., None], _sample_clamped(image_HWC, src_r_HW, src_c_HW), fill)


def gaussian_blur(images_BHWC: jax.Array, sigma_B: jax.Array, radius: int) -> jax.Array:
  """Each image blurred by a separable Gaussian of its own sigma (pixels; 0 leaves it as it is), edges repeated;
  the kernel spans 2 * radius + 1 taps."""
  offsets_K = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  sigma_B1 = jnp.maximum(sigma_B, 1e-3)[:, None]
  weights_BK = jnp.exp(-0.5 * (offsets_K[None, :] / sigma_B1)**2)
  weights_BK = weights_BK / weights_BK.sum(axis=1, keepdims=True)
  height, width = images_BHWC.shape[1:3]
  padded = jnp.pad(images_BHWC, ((0, 0), (radius, radius), (0, 0), (0, 0)), mode='edge')
  x = sum(weights_BK[:, k, None, None, None] * padded[:, k:k + height] for k in range(2 * radius + 1))
  padded = jnp.pad(x, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode='edge')
  return sum(weights_BK[:, k, None, None, None] * padded[:, :, k:k + width] for k in range(2 * radius + 1))


def resolution_jitter(images_BHWC: jax.Array, choice_B: jax.Array, factors: Sequence[float]) -> jax.Array:
  """Each image with choice c >= 0 resized down to factors[c] of its side (antialiased linear: each small pixel
  averages the pixels it covers) and back up (linear); choice -1 leaves it as it is."""
  batch, height, width, channels = images_BHWC.shape
  out = images_BHWC
  for index, factor in enumerate(factors):
    small = jax.image.resize(images_BHWC, (batch, max(1, round(height * factor)), max(1, round(width * factor)),
                                           channels), 'linear', antialias=True)
    back = jax.image.resize(small, images_BHWC.shape, 'linear')
    out = jnp.where((choice_B == index)[:, None, None, None], back, out)
  return out


def augment_batch(images_BHWC: jax.Array, key: jax.Array,
                  augment_config: ml_collections.ConfigDict | AugmentSettings) -> jax.Array:
  """Augments each example with its own parameters drawn from `key`; same shape, dtype and range out."""
  settings = augment_config if isinstance(augment_config, AugmentSettings) else augment_settings(augment_config)
  if images_BHWC.ndim != 4:
    raise ValueError(f'augment_batch takes B x H x W x C images, got shape {images_BHWC.shape}')
  if images_BHWC.dtype != jnp.uint8 and not jnp.issubdtype(images_BHWC.dtype, jnp.floating):
    raise ValueError(f'augment_batch takes uint8 or float images on [0, 255], got {images_BHWC.dtype}')
  if settings.is_identity:
    return images_BHWC
  batch, height, width, _ = images_BHWC.shape
  keys = jax.random.split(key, 6)
  source_keys = jax.random.split(jax.random.fold_in(key, 1), 16)  # The source-aimed ops' own draws.
  x_BHWC = images_BHWC.astype(jnp.float32)
  if settings.brightness_prob > 0:
    delta_B = _draw(keys[0], settings.brightness_prob, settings.brightness_delta, 0.0, (batch,))
    x_BHWC = x_BHWC + (delta_B * PIXEL_MAX)[:, None, None, None]
  if settings.contrast_prob > 0:
    factor_B = _draw(keys[1], settings.contrast_prob, settings.contrast_range, 1.0, (batch,))
    mean_B11C = x_BHWC.mean(axis=(1, 2), keepdims=True)
    x_BHWC = (x_BHWC - mean_B11C) * factor_B[:, None, None, None] + mean_B11C
  x_BHWC = jnp.clip(x_BHWC, 0.0, PIXEL_MAX)
  if settings.gamma_prob > 0:  # Film response: (x / 255) ** gamma.
    gamma_B = _draw(source_keys[0], settings.gamma_prob, settings.gamma_range, 1.0, (batch,))
    x_BHWC = PIXEL_MAX * (x_BHWC / PIXEL_MAX)**gamma_B[:, None, None, None]
  if settings.warps:
    angle_B = _draw(keys[2], settings.rotation_prob, settings.rotation_degrees, 0.0, (batch,))
    zoom_B = _draw(keys[3], settings.zoom_prob, settings.zoom_range, 1.0, (batch,))
    shift_B2 = _draw(keys[4], settings.shift_prob, settings.shift_fraction, 0.0, (batch, 2))
    # Off by default: a chest is not mirror-symmetric (the heart sits on the patient's left), so a flipped
    # film is not a plausible X-ray of the same class; turn it on only to test that claim.
    flip_B = jnp.where(jax.random.bernoulli(keys[5], settings.hflip_prob, (batch,)), -1.0, 1.0)
    matrices_B23 = jax.vmap(functools.partial(inverse_affine, height=height, width=width))(
        angle_B, zoom_B, shift_B2, flip_B)
    if settings.crop_prob > 0:  # A random resized crop, composed before the warp: one resampling for both.
      cropped_B = jax.random.bernoulli(source_keys[1], settings.crop_prob, (batch,))
      scale_B = jnp.where(cropped_B, jax.random.uniform(source_keys[2], (batch,), jnp.float32,
                                                        *settings.crop_scale), 1.0)
      log_ratio = tuple(math.log(r) for r in settings.crop_ratio)
      ratio_B = jnp.where(cropped_B, jnp.exp(jax.random.uniform(source_keys[3], (batch,), jnp.float32,
                                                                *log_ratio)), 1.0)
      offset_B2 = jnp.where(cropped_B[:, None], jax.random.uniform(source_keys[4], (batch, 2)), 0.0)
      warp_B33 = jnp.concatenate([matrices_B23, jnp.broadcast_to(jnp.asarray([[[0.0, 0.0, 1.0]]]), (batch, 1, 3))],
                                 axis=1)
      matrices_B23 = (crop_inverse(scale_B, ratio_B, offset_B2, height, width) @ warp_B33)[:, :2]
    x_BHWC = jax.vmap(warp_bilinear)(x_BHWC, matrices_B23)
  if settings.resolution_prob > 0:  # Down to a coarser acquisition and back up.
    jittered_B = jax.random.bernoulli(source_keys[5], settings.resolution_prob, (batch,))
    choice_B = jax.random.randint(source_keys[6], (batch,), 0, len(settings.resolution_factors))
    x_BHWC = resolution_jitter(x_BHWC, jnp.where(jittered_B, choice_B, -1), settings.resolution_factors)
  if settings.blur_prob > 0:
    sigma_B = _draw(source_keys[7], settings.blur_prob, settings.blur_sigma, 0.0, (batch,))
    x_BHWC = gaussian_blur(x_BHWC, sigma_B, max(1, math.ceil(3 * settings.blur_sigma[1])))
  if settings.noise_prob > 0:  # One value per pixel for all channels: a grey film stays grey.
    std_B = _draw(source_keys[8], settings.noise_prob, settings.noise_std, 0.0, (batch,)) * PIXEL_MAX
    x_BHWC = x_BHWC + std_B[:, None, None, None] * jax.random.normal(source_keys[9], (batch, height, width, 1))
  if settings.pad_prob > 0:
    padded_B = jax.random.bernoulli(source_keys[10], settings.pad_prob, (batch,))
    fractions_B4 = jnp.where(padded_B[:, None], jax.random.uniform(source_keys[11], (batch, 4), jnp.float32,
                                                                   *settings.pad_fraction), 0.0)
    fill_B = jax.random.uniform(source_keys[12], (batch,), jnp.float32, 0.0, PIXEL_MAX)
    x_BHWC = jax.vmap(pad_border)(x_BHWC, fractions_B4, fill_B)
  x_BHWC = jnp.clip(x_BHWC, 0.0, PIXEL_MAX)
  if images_BHWC.dtype == jnp.uint8:
    return jnp.clip(jnp.round(x_BHWC), 0, 255).astype(jnp.uint8)
  return x_BHWC.astype(images_BHWC.dtype)


def make_augment_fn(augment_config: ml_collections.ConfigDict) -> Callable[[jax.Array, jax.Array], jax.Array] | None:
  """Returns jit(augment_batch) with the config bound, or None when config.augment.enabled is False."""
  settings = augment_settings(augment_config)
  if not settings.enabled:
    return None
  return jax.jit(functools.partial(augment_batch, augment_config=settings))


def reencode_jpeg(image_HWC: np.ndarray, quality: int) -> np.ndarray:
  """The uint8 image saved as a JPEG of `quality` and decoded again (grey images as one band, so they stay grey)."""
  grey = bool((image_HWC[..., 0] == image_HWC[..., 1]).all() and (image_HWC[..., 0] == image_HWC[..., 2]).all())
  buffer = io.BytesIO()
  Image.fromarray(image_HWC[..., 0] if grey else image_HWC).save(buffer, format='JPEG', quality=int(quality))
  buffer.seek(0)
  with Image.open(buffer) as decoded:
    pixels = np.asarray(decoded.convert('L' if grey else 'RGB'), np.uint8)
  return np.repeat(pixels[..., None], 3, axis=-1) if grey else pixels


@dataclasses.dataclass(frozen=True)
class JpegReencode:
  """Host-side: each image of a batch re-encoded as a JPEG of a quality drawn from `quality` with probability
  `prob` (grain random_map hands in a generator seeded by the pipeline's seed and the element's index)."""

  prob: float
  quality: tuple[float, float]

  def __call__(self, batch: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    images_BHWC = np.asarray(batch['image'])
    out_BHWC = images_BHWC.copy()
    for index in range(len(images_BHWC)):
      if rng.random() < self.prob:
        quality = int(round(rng.uniform(*self.quality)))
        out_BHWC[index] = reencode_jpeg(images_BHWC[index], quality)
    return {**batch, 'image': out_BHWC}


def host_augment_fn(augment_config: ml_collections.ConfigDict) -> JpegReencode | None:
  """The host-side part of config.augment (JPEG re-encoding), or None when it cannot fire."""
  settings = augment_settings(augment_config)
  if not settings.enabled or settings.jpeg_prob <= 0:
    return None
  return JpegReencode(settings.jpeg_prob, settings.jpeg_quality)


def grid_figure(before_BHWC: np.ndarray, after_BHWC: np.ndarray, labels_B: np.ndarray, classes: Sequence[str],
                title: str, columns: int = 8) -> plt.Figure:
  """Draws the batch before (top rows) and after (bottom rows) augmentation, each image titled by class."""
  batch = len(labels_B)
  columns = min(columns, batch)
  rows = -(-batch // columns)
  fig = plt.figure(figsize=(1.7 * columns, 2 * 1.85 * rows + 0.6), layout='constrained')
  fig.suptitle(title)
  for subfig, name, images_BHWC in zip(fig.subfigures(2, 1), ('before', 'after'), (before_BHWC, after_BHWC)):
    subfig.suptitle(f'{name} augmentation', fontsize='medium')
    axes = np.asarray(subfig.subplots(rows, columns, squeeze=False)).reshape(-1)
    for index, ax in enumerate(axes):
      ax.axis('off')
      if index < batch:
        ax.imshow(np.asarray(images_BHWC[index]).astype(np.uint8), vmin=0, vmax=255)
        ax.set_title(classes[int(labels_B[index])], fontsize='small')
  return fig


def write_grid(config: ml_collections.ConfigDict, out: str, seed: int) -> str:
  """Augments config's first training batch with key `seed` and saves the before/after grid PNG to `out`."""
  augment_fn = make_augment_fn(config.augment)
  if augment_fn is None:
    raise ValueError('config.augment.enabled is False: nothing to draw (use configs/cnn_augment.py or '
                     '--config.augment.enabled=True)')
  data = loading.load_training_data(config)
  dataset = pipeline.train_dataset(data.train.images_NHWC, data.train.labels_N,
                                   global_batch_size=config.train.batch_size, num_epochs=1, seed=config.seed)
  batch = dataset[0]
  host_fn = host_augment_fn(config.augment)
  host_BHWC = batch['image'] if host_fn is None else host_fn(batch, np.random.default_rng(seed))['image']
  after_BHWC = np.asarray(augment_fn(jnp.asarray(host_BHWC), jax.random.PRNGKey(seed)))
  fig = grid_figure(batch['image'], after_BHWC, batch['label'], config.data.classes,
                    f'{config.name}: first training batch, augmentation seed {seed}')
  _save_png(fig, out)
  return out


def _save_png(fig: plt.Figure, out: str) -> None:
  """Saves the figure to `out` by workdir.write_figure (atomic; never through a link nor over a foreign file)."""
  try:
    workdir_lib.write_figure(out, fig, dpi=100, metadata={'Software': None})
  finally:
    plt.close(fig)


# The rows of the per-op grid: (title, the probability field that turns the op on).
OP_ROWS = (('random resized crop', 'crop_prob'), ('rotation', 'rotation_prob'), ('gamma', 'gamma_prob'),
           ('contrast', 'contrast_prob'), ('resolution jitter', 'resolution_prob'), ('blur', 'blur_prob'),
           ('noise', 'noise_prob'), ('border padding', 'pad_prob'), ('JPEG (host)', 'jpeg_prob'))


def only_op(settings: AugmentSettings, probability_field: str) -> AugmentSettings:
  """settings with every op off but one, which always fires (its ranges as configured)."""
  return dataclasses.replace(settings, enabled=True,
                             **{name: 1.0 if name == probability_field else 0.0 for name in _PROBABILITIES})


def augment_views(images_BHWC: np.ndarray, settings: AugmentSettings, seed: int) -> np.ndarray:
  """The images through the host-side ops (JPEG) and then the on-device ones of `settings`, with key `seed`."""
  if settings.enabled and settings.jpeg_prob > 0:
    images_BHWC = JpegReencode(settings.jpeg_prob, settings.jpeg_quality)(
        {'image': images_BHWC}, np.random.default_rng(seed))['image']
  return np.asarray(augment_batch(jnp.asarray(images_BHWC), jax.random.PRNGKey(seed), settings))


def write_op_grid(config: ml_collections.ConfigDict, out: str, seed: int, n_images: int = 6) -> str:
  """One row per op (each alone, always firing, with config.augment's ranges; then all of them as configured) over
  the first n_images of the first training batch; saves the PNG to `out`."""
  settings = augment_settings(config.augment)
  data = loading.load_training_data(config)
  dataset = pipeline.train_dataset(data.train.images_NHWC, data.train.labels_N,
                                   global_batch_size=max(config.train.batch_size, n_images), num_epochs=1,
                                   seed=config.seed)
  batch = dataset[0]
  images_BHWC, labels_B = batch['image'][:n_images], batch['label'][:n_images]
  rows = [('original', images_BHWC)]
  rows += [(title, augment_views(images_BHWC, only_op(settings, field), seed)) for title, field in OP_ROWS]
  if settings.enabled:
    rows.append(('all, as configured', augment_views(images_BHWC, settings, seed)))
  fig, axes = plt.subplots(len(rows), n_images, figsize=(1.6 * n_images + 1.6, 1.6 * len(rows) + 0.6),
                           squeeze=False, layout='constrained')
  fig.suptitle(f'{config.name}: each augmentation alone (probability 1), seed {seed}')
  for r, (title, row_BHWC) in enumerate(rows):
    for c in range(n_images):
      ax = axes[r, c]
      ax.imshow(np.asarray(row_BHWC[c]).astype(np.uint8), vmin=0, vmax=255)
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(config.data.classes[int(labels_B[c])], fontsize='small')
      if c == 0:
        ax.set_ylabel(title, fontsize='small')
  _save_png(fig, out)
  return out


def main(argv: Sequence[str]) -> None:
  """Runs the grid command."""
  del argv
  write = write_op_grid if flags.FLAGS.per_op else write_grid
  out = write(flags.FLAGS.config, flags.FLAGS.out, flags.FLAGS.seed)
  print(f'wrote {os.path.abspath(out)}')


if __name__ == '__main__':
  # Flags only when run as a command: training imports this module, and lungjax.main owns --config there.
  config_flags.DEFINE_config_file('config', None, 'A configs/*.py file; override fields as --config.a.b=value.',
                                  lock_config=True)
  flags.DEFINE_string('out', None, 'The PNG to write: the first training batch before and after augmentation.')
  flags.DEFINE_integer('seed', 0, 'The augmentation key: jax.random.PRNGKey(seed).')
  flags.DEFINE_bool('per_op', False, 'Draw one row per augmentation op (each alone) instead of the batch grid.')
  flags.mark_flags_as_required(['config', 'out'])
  app.run(main)
