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

import io
import json
import os
from collections.abc import Sequence
from typing import Any, Union

import jax
import numpy as np
from PIL import Image

from lungjax.runtime import workdir as workdir_lib
from lungjax.data import images, resize
# The model itself (weights, loading, masks of decoded pixels) lives below data/ so preprocessing can use it.
from lungjax.models.lung_unet import (  # pylint: disable=unused-import
    BATCH_SIZE, META_KEY, WEIGHTS_PATH, LungModel, film_grey, load_lungs, model_from, model_input, upsample_logits,
    weights_record)

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


def mask_target(mask_HW: np.ndarray, size: int) -> np.ndarray:
  """A 0/255 (or 0/1) mask at size x size as the training target: area-averaged, float32 in [0, 1]."""
  mask = Image.fromarray(((np.asarray(mask_HW) > 0) * 255).astype(np.uint8))
  return np.asarray(resize.area_resize(mask, size), np.float32) / 255.0


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


def _pixels(image: ImageInput) -> np.ndarray:
  """uint8 pixels of a path (JPEG, PNG, DICOM: lungjax's decoder), PIL image or array."""
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


def lung_mask_of(image: ImageInput, model: LungModel | None = None) -> np.ndarray:
  """The bool H x W lung mask of one film (a path, a PIL image of any mode, or uint8 pixels), decoded as lungjax's
  decoder does; lung_unet.lung_mask_of takes already-decoded pixels (preprocessing)."""
  return (model or load_lungs()).masks([_pixels(image)])[0]
