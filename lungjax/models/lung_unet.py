"""The lung U-Net's model: its shipped weights, loading, and masks of decoded films (issue 24).

The part of lungjax/lungs.py that data/preprocess.py needs (config.data.preprocess.lungs, config.data.mask_markers),
kept below data/ so that preprocessing can ask for a mask without importing the decoder: `lung_mask_of` takes
decoded pixels (uint8 arrays, or PIL images of mode L or RGB, as lungjax's decoder hands them on). lungjax/lungs.py
(the Python API: files, any PIL mode, batches) re-exports every name here.

Every film goes through `model_input` (grey = channel mean, area-averaged to the model's side, 256 px), the jitted
U-Net gives logits at that side, `upsample_logits` takes them bilinearly back to the film's own size and a mask is
logit > 0.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from PIL import Image

from lungjax.data import resize

WEIGHTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'weights', 'lungs_unet.npz')
META_KEY = '__meta__'  # The npz entry holding the model's fields and provenance as JSON bytes.
BATCH_SIZE = 8


def film_grey(pixels_HWC: np.ndarray) -> np.ndarray:
  """The grey level the U-Net reads: the channel mean of uint8 HxWxC (or HxW) pixels, rounded, uint8 HxW."""
  pixels = np.asarray(pixels_HWC)
  if pixels.ndim == 2:
    return pixels.astype(np.uint8)
  if pixels.ndim != 3:
    raise ValueError(f'a film must be H x W or H x W x C pixels, got shape {pixels.shape}')
  if pixels.shape[-1] == 1:
    return pixels[..., 0].astype(np.uint8)
  return np.rint(pixels[..., :3].astype(np.float32).mean(axis=-1)).astype(np.uint8)


def model_input(pixels_HWC: np.ndarray, size: int) -> np.ndarray:
  """The film as the U-Net sees it: film_grey, then size x size, area-averaged where it shrinks (bilinear where it
  grows; aspect ratio not kept). uint8 size x size."""
  grey = Image.fromarray(film_grey(pixels_HWC))
  return np.asarray(resize.area_resize(grey, size), np.uint8)


def upsample_logits(logits_SS: np.ndarray, height: int, width: int) -> np.ndarray:
  """Logits at the model's side back to height x width, bilinearly (PIL, float32)."""
  logits = np.asarray(logits_SS, np.float32)
  if logits.shape == (height, width):
    return logits
  return np.asarray(Image.fromarray(logits, mode='F').resize((width, height), Image.Resampling.BILINEAR), np.float32)


@functools.partial(jax.jit, static_argnums=0)
def _logits(module: Any, params: Any, inputs_BSS: Any) -> Any:
  """The U-Net's logits_BSS of uint8 inputs (one compile per module and batch shape)."""
  return module.apply({'params': params}, inputs_BSS[..., None], train=False)


@dataclasses.dataclass(frozen=True, eq=False)
class LungModel:
  """A lung U-Net and its parameters: `logits` of model inputs, `masks` of films of any size."""

  module: Any  # lungjax.models.unet.UNet
  params: Any
  size: int
  meta: dict[str, Any]

  def logits(self, inputs_NSS: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Logits (float32 N x S x S) of model_input arrays, batch_size (at most N) at a time (the last batch padded)."""
    inputs_NSS = np.asarray(inputs_NSS, np.uint8)
    if inputs_NSS.ndim != 3 or inputs_NSS.shape[1:] != (self.size, self.size):
      raise ValueError(f'model inputs must be N x {self.size} x {self.size}, got {inputs_NSS.shape}')
    out = []
    batch_size = max(1, min(batch_size, len(inputs_NSS)))  # One film is run alone, not padded to a full batch.
    for start in range(0, len(inputs_NSS), batch_size):
      chunk = inputs_NSS[start:start + batch_size]
      padded = np.concatenate([chunk, np.zeros((batch_size - len(chunk), *chunk.shape[1:]), np.uint8)])
      out.append(np.asarray(jax.device_get(_logits(self.module, self.params, padded)))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, self.size, self.size), np.float32)

  def masks(self, films: Sequence[np.ndarray], batch_size: int = BATCH_SIZE) -> list[np.ndarray]:
    """One bool H x W mask per film (uint8 H x W x C or H x W pixels, each at its own size)."""
    films = [np.asarray(f) for f in films]
    logits_NSS = self.logits(np.stack([model_input(f, self.size) for f in films]) if films
                             else np.zeros((0, self.size, self.size), np.uint8), batch_size)
    return [upsample_logits(l, *f.shape[:2]) > 0 for l, f in zip(logits_NSS, films)]


def model_from(params: Any, features: Sequence[int], downsample: int, size: int,
               meta: dict[str, Any] | None = None) -> LungModel:
  """A LungModel of given float32 params and U-Net fields."""
  from lungjax.models.unet import UNet  # pylint: disable=g-import-not-at-top
  return LungModel(UNet(num_classes=1, features=tuple(int(f) for f in features), downsample=int(downsample)),
                   params, int(size), dict(meta or {}))


@functools.cache
def _load_cached(path: str, mtime: float) -> LungModel:
  del mtime  # Part of the cache key only: a rewritten file is read again.
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  with np.load(path, allow_pickle=False) as data:
    meta = json.loads(bytes(data[META_KEY]).decode())
    flat = {key: jnp.asarray(data[key].astype(np.float32)) for key in data.files if key != META_KEY}
  params = traverse_util.unflatten_dict(flat, sep='/')
  return model_from(params, meta['features'], meta['downsample'], meta['size'], meta)


def load_lungs(path: str | os.PathLike | None = None) -> LungModel:
  """The lung U-Net from an .npz of save_weights (default: the weights shipped in the package), in float32."""
  path = os.fspath(path or WEIGHTS_PATH)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path!r} not found: the lung weights ship in lungjax/models/weights/; '
                            'bash results/lungs/regenerate.sh trains and exports them')
  return _load_cached(os.path.abspath(path), os.path.getmtime(path))


def weights_record(path: str | os.PathLike | None = None) -> dict[str, Any]:
  """Which lung weights: the file's name, sha256 and the U-Net fields of its meta (fingerprints, model cards); a
  missing file gives {'file': name, 'sha256': None}."""
  import hashlib  # pylint: disable=g-import-not-at-top
  path = os.fspath(path or WEIGHTS_PATH)
  if not os.path.isfile(path):
    return {'file': os.path.basename(path), 'sha256': None}
  with open(path, 'rb') as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  meta = load_lungs(path).meta
  return {'file': os.path.basename(path), 'sha256': digest,
          **{key: meta[key] for key in ('features', 'downsample', 'size', 'dtype', 'step') if key in meta}}


def decoded_pixels(image: Image.Image | np.ndarray) -> np.ndarray:
  """uint8 pixels of a decoded film: an array as it is, a PIL image of mode L or RGB (what lungjax's decoder
  hands on); other modes go through lungjax.lungs.segment, which decodes like training does."""
  if isinstance(image, Image.Image):
    if image.mode not in ('L', 'RGB'):
      raise ValueError(f'a decoded film of mode {image.mode!r}: lung_unet takes L or RGB; lungjax.segment / '
                       'lungjax.lungs.lung_mask_of convert other modes as lungjax\'s decoder does')
    return np.asarray(image)
  pixels = np.asarray(image)
  if pixels.dtype != np.uint8:
    raise ValueError(f'film arrays must be uint8, got {pixels.dtype}')
  return pixels


def lung_mask_of(image: Image.Image | np.ndarray, model: LungModel | None = None) -> np.ndarray:
  """The bool H x W lung mask of one decoded film (what config.data.preprocess.lungs crops or fills by)."""
  return (model or load_lungs()).masks([decoded_pixels(image)])[0]
