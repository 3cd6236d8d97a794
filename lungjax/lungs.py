"""Where the lungs are: the shipped lung U-Net (issue 24) as a Python API.

  import lungjax
  masks_NHW = lungjax.lung_masks(images_NHWC)       # bool, one H x W mask per film (uint8 RGB or grey)
  masks = lungjax.segment(['a.png', img_pil, arr])  # a list of H x W bool masks, any sizes
  model = lungjax.load_lungs()                       # the packaged float16 weights (or load_lungs(path))

Every film goes through `model_input` (grey = channel mean, area-averaged to the model's side, 256 px), the
jitted U-Net gives logits at that side, `upsample_logits` takes them bilinearly back to the film's own size and a
mask is logit > 0. Training (lungjax/segmentation.py), the report, `lungjax segment`, the shortcut check and
config.data.preprocess.lungs all use these functions, so a mask is the same wherever it is made.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
from collections.abc import Sequence
from typing import Any, Union

import jax
import numpy as np
from PIL import Image

from lungjax import workdir as workdir_lib

WEIGHTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'models', 'weights', 'lungs_unet.npz')
META_KEY = '__meta__'  # The npz entry holding the model's fields and provenance as JSON bytes.
BATCH_SIZE = 8

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


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
  from lungjax.data import preprocess  # pylint: disable=g-import-not-at-top  (preprocess imports this module lazily)
  grey = Image.fromarray(film_grey(pixels_HWC))
  return np.asarray(preprocess.area_resize(grey, size), np.uint8)


def mask_target(mask_HW: np.ndarray, size: int) -> np.ndarray:
  """A 0/255 (or 0/1) mask at size x size as the training target: area-averaged, float32 in [0, 1]."""
  mask = Image.fromarray(((np.asarray(mask_HW) > 0) * 255).astype(np.uint8))
  from lungjax.data import preprocess  # pylint: disable=g-import-not-at-top
  return np.asarray(preprocess.area_resize(mask, size), np.float32) / 255.0


def upsample_logits(logits_SS: np.ndarray, height: int, width: int) -> np.ndarray:
  """Logits at the model's side back to height x width, bilinearly (PIL, float32)."""
  logits = np.asarray(logits_SS, np.float32)
  if logits.shape == (height, width):
    return logits
  return np.asarray(Image.fromarray(logits, mode='F').resize((width, height), Image.Resampling.BILINEAR), np.float32)


def dice(mask_a_HW: np.ndarray, mask_b_HW: np.ndarray) -> float:
  """Dice of two boolean masks: 2|A∩B| / (|A| + |B|); 1.0 when both are empty."""
  a, b = np.asarray(mask_a_HW) > 0, np.asarray(mask_b_HW) > 0
  total = int(a.sum()) + int(b.sum())
  return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def iou(mask_a_HW: np.ndarray, mask_b_HW: np.ndarray) -> float:
  """Intersection over union of two boolean masks; 1.0 when both are empty."""
  a, b = np.asarray(mask_a_HW) > 0, np.asarray(mask_b_HW) > 0
  union = int(np.logical_or(a, b).sum())
  return 1.0 if union == 0 else int(np.logical_and(a, b).sum()) / union


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


def params_to_arrays(params: Any, dtype: str = 'float16') -> dict[str, np.ndarray]:
  """The parameter pytree flattened to {'Conv_0/kernel': array} in `dtype` (the shipped file's entries)."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  flat = traverse_util.flatten_dict(jax.device_get(params), sep='/')
  return {key: np.asarray(value).astype(dtype) for key, value in flat.items()}


def save_weights(path: str, params: Any, meta: dict[str, Any], dtype: str = 'float16') -> None:
  """Writes params (as `dtype`) and meta to an .npz by workdir.write_bytes (atomic; never through a link or over a
  file lungjax did not write)."""
  arrays = params_to_arrays(params, dtype)
  arrays[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  workdir_lib.write_bytes(path, buffer.getvalue())


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


def _pixels(image: ImageInput) -> np.ndarray:
  """uint8 pixels of a path (JPEG, PNG, DICOM: lungjax's decoder), PIL image or array."""
  from lungjax.data import images  # pylint: disable=g-import-not-at-top
  if isinstance(image, (str, os.PathLike)):
    with images.open_image(os.fspath(image)) as opened:
      return images.to_rgb_uint8(opened)
  if isinstance(image, Image.Image):
    return images.to_rgb_uint8(image)
  pixels = np.asarray(image)
  if pixels.dtype != np.uint8:
    raise ValueError(f'film arrays must be uint8, got {pixels.dtype}')
  return pixels


def lung_masks(images_NHWC: np.ndarray, model: LungModel | None = None) -> np.ndarray:
  """Bool masks_NHW of a uint8 batch images_NHWC (C = 1 or 3) or images_NHW: True inside the lungs."""
  images_NHWC = np.asarray(images_NHWC)
  if images_NHWC.dtype != np.uint8 or images_NHWC.ndim not in (3, 4):
    raise ValueError(f'images_NHWC must be uint8 N x H x W x C or N x H x W, got {images_NHWC.dtype} '
                     f'{images_NHWC.shape}')
  model = model or load_lungs()
  masks = model.masks(list(images_NHWC))
  return np.stack(masks) if masks else np.zeros(images_NHWC.shape[:3], bool)


def segment(images: ImageInput | Sequence[ImageInput], model: LungModel | None = None) -> list[np.ndarray] | np.ndarray:
  """Lung masks of paths, PIL images or arrays: a list of H x W bool masks (each at its film's size); a uint8
  N x H x W x C array gives lung_masks' N x H x W array; a single path, image or H x W (x C) array gives one mask."""
  model = model or load_lungs()
  if isinstance(images, np.ndarray) and images.ndim == 4:
    return lung_masks(images, model)
  single = isinstance(images, (str, os.PathLike, Image.Image, np.ndarray))
  films = [_pixels(image) for image in ([images] if single else list(images))]
  masks = model.masks(films)
  return masks[0] if single else masks


def lung_mask_of(image: Image.Image | np.ndarray, model: LungModel | None = None) -> np.ndarray:
  """The bool H x W lung mask of one decoded film (what config.data.preprocess.lungs crops or fills by)."""
  return (model or load_lungs()).masks([_pixels(image)])[0]
