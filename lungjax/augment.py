"""Seeded on-device augmentation of training batches, and a command that draws a batch before and after.

python -m lungjax.augment --config=configs/cnn_augment.py --config.data.root=ROOT --out=FILE.png [--seed=0]

Each example draws its own rotation, zoom, shift and (off by default) horizontal flip, composed into one
affine warp (bilinear, black fill like an X-ray border), after a brightness and contrast change. Images keep
their dtype and [0, 255] range, so a model sees augmented images exactly like plain ones.
"""

from __future__ import annotations

import dataclasses
import functools
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

from lungjax.data import loading, pipeline

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

PIXEL_MAX = 255.0  # uint8 and float images alike are on the [0, 255] scale the models rescale themselves.
_PROBABILITIES = ('rotation_prob', 'zoom_prob', 'shift_prob', 'hflip_prob', 'brightness_prob', 'contrast_prob')
# Each (low, high) range field: which pairs are allowed, and what they mean.
_RANGES = {
    'rotation_degrees': (lambda low, high: True, 'degrees, counter-clockwise'),
    'zoom_range': (lambda low, high: low > 0, 'scale factors > 0, above 1 zooms in'),
    'shift_fraction': (lambda low, high: -1 <= low and high <= 1,
                       'fractions of the height and width in [-1, 1], positive moves down and right'),
    'brightness_delta': (lambda low, high: -1 <= low and high <= 1, f'fractions of {PIXEL_MAX:g} added, in [-1, 1]'),
    'contrast_range': (lambda low, high: low >= 0, 'factors >= 0 about each image\'s mean'),
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

  @property
  def warps(self) -> bool:
    """True when any geometric op can fire (otherwise the warp is skipped)."""
    return any(p > 0 for p in (self.rotation_prob, self.zoom_prob, self.shift_prob, self.hflip_prob))

  @property
  def is_identity(self) -> bool:
    """True when no op can fire: augment_batch returns its input."""
    return not self.enabled or not any(getattr(self, name) > 0 for name in _PROBABILITIES)


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
  given = dict(augment_config.items())
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
  x_BHWC = images_BHWC.astype(jnp.float32)
  if settings.brightness_prob > 0:
    delta_B = _draw(keys[0], settings.brightness_prob, settings.brightness_delta, 0.0, (batch,))
    x_BHWC = x_BHWC + (delta_B * PIXEL_MAX)[:, None, None, None]
  if settings.contrast_prob > 0:
    factor_B = _draw(keys[1], settings.contrast_prob, settings.contrast_range, 1.0, (batch,))
    mean_B11C = x_BHWC.mean(axis=(1, 2), keepdims=True)
    x_BHWC = (x_BHWC - mean_B11C) * factor_B[:, None, None, None] + mean_B11C
  x_BHWC = jnp.clip(x_BHWC, 0.0, PIXEL_MAX)
  if settings.warps:
    angle_B = _draw(keys[2], settings.rotation_prob, settings.rotation_degrees, 0.0, (batch,))
    zoom_B = _draw(keys[3], settings.zoom_prob, settings.zoom_range, 1.0, (batch,))
    shift_B2 = _draw(keys[4], settings.shift_prob, settings.shift_fraction, 0.0, (batch, 2))
    # Off by default: a chest is not mirror-symmetric (the heart sits on the patient's left), so a flipped
    # film is not a plausible X-ray of the same class; turn it on only to test that claim.
    flip_B = jnp.where(jax.random.bernoulli(keys[5], settings.hflip_prob, (batch,)), -1.0, 1.0)
    matrices_B23 = jax.vmap(functools.partial(inverse_affine, height=height, width=width))(
        angle_B, zoom_B, shift_B2, flip_B)
    x_BHWC = jax.vmap(warp_bilinear)(x_BHWC, matrices_B23)
  if images_BHWC.dtype == jnp.uint8:
    return jnp.clip(jnp.round(x_BHWC), 0, 255).astype(jnp.uint8)
  return x_BHWC.astype(images_BHWC.dtype)


def make_augment_fn(augment_config: ml_collections.ConfigDict) -> Callable[[jax.Array, jax.Array], jax.Array] | None:
  """Returns jit(augment_batch) with the config bound, or None when config.augment.enabled is False."""
  settings = augment_settings(augment_config)
  if not settings.enabled:
    return None
  return jax.jit(functools.partial(augment_batch, augment_config=settings))


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
  after_BHWC = np.asarray(augment_fn(jnp.asarray(batch['image']), jax.random.PRNGKey(seed)))
  fig = grid_figure(batch['image'], after_BHWC, batch['label'], config.data.classes,
                    f'{config.name}: first training batch, augmentation seed {seed}')
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=100, metadata={'Software': None})
  plt.close(fig)
  return out


def main(argv: Sequence[str]) -> None:
  """Runs the grid command."""
  del argv
  out = write_grid(flags.FLAGS.config, flags.FLAGS.out, flags.FLAGS.seed)
  print(f'wrote {os.path.abspath(out)}')


if __name__ == '__main__':
  # Flags only when run as a command: training imports this module, and lungjax.main owns --config there.
  config_flags.DEFINE_config_file('config', None, 'A configs/*.py file; override fields as --config.a.b=value.',
                                  lock_config=True)
  flags.DEFINE_string('out', None, 'The PNG to write: the first training batch before and after augmentation.')
  flags.DEFINE_integer('seed', 0, 'The augmentation key: jax.random.PRNGKey(seed).')
  flags.mark_flags_as_required(['config', 'out'])
  app.run(main)
