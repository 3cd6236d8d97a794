"""Preprocessing that removes what tells sources apart: the one function every decode path runs (issue 23 part 2).

images.load_image (training, --mode=eval, explain, shortcuts, the autoencoder's folders) and inference.to_pixels
(lungjax.load(...).predict / explain, any PIL image or array) call `preprocess_image` on the decoded full-size
8-bit image with the run's `settings_of(config)`, so what the model saw in training is what it sees in use. The
steps, each a field of config.data.preprocess and off by default, in the order they run:

1. working resolution (`working_size`): the image is area-averaged (PIL's BOX filter: each output pixel the mean of
   the input pixels it covers) to working_size x working_size before anything else, so a 224 px PNG and a 2,000 px
   JPEG end up equally sharp; with `acquisition_size` it goes through that lower resolution first (area-averaged
   down, bilinear up), as if every source had been digitised that coarsely.
2. border removal (`crop_borders`): rows and columns at the edges whose grey levels are near-constant (standard
   deviation at most `border_tolerance` grey levels: letterboxing, black or white frames, film edges) are cropped,
   at most `border_max_fraction` of the side from each edge.
3. percentile windowing (`window_percentiles`, (low, high) in percent): the image's low / high percentiles are
   stretched to 0 / 255 and the rest clipped; (0, 100) is off.
4. intensity normalisation (`intensity`): 'equalize' (histogram equalisation, scikit-image `equalize_hist`) or
   'clahe' (contrast-limited adaptive histogram equalisation, scikit-image `equalize_adapthist`, clip limit
   `clahe_clip_limit`); 'none' is off.
5. the lungs (`lungs`): 'crop' (to the lungs' bounding box plus `lung_margin` of its size) or 'fill' (everything
   outside the lungs set to 0), by apply_lungs. The mask is the shipped lung U-Net's (lungjax/models/lung_unet.py
   `lung_mask_of`, weights lungjax/models/weights/lungs_unet.npz) of the decoded full-size film, made inside
   preprocess_image itself, so training, --mode=eval / explain / shortcuts, predict and the API mask alike; the
   weights' sha256 is in `record` (the fingerprint and the model card).

0. burned-in markers (config.data.mask_markers, a field of config.data beside this group): before every step above,
   on the full-size grey film, the marker regions that data/markers.py finds (L, R, AP, PORTABLE, arrows, labels)
   are filled with the grey around them (markers.mask_markers; when `lungs` is on, given its mask: never a lung
   pixel. With the film alone it can fill print lying on the lungs: results/markers/README.md, "Lung guard").

Then the image is resized to the model's image_size (area-averaged when it shrinks, bilinear when it grows). With
any step on, the image is grey (its three channels equal); with every step off the pixels are exactly those lungjax
always made (RGB kept, a bilinear resize of the full-size image).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import ml_collections
import numpy as np
from PIL import Image

from lungjax.data.resize import area_resize  # pylint: disable=unused-import  (preprocess.area_resize, as before)

INTENSITY = ('none', 'equalize', 'clahe')
LUNGS = ('none', 'crop', 'fill')
_DEFAULTS = {'working_size': 0, 'acquisition_size': 0, 'crop_borders': False, 'border_tolerance': 6.0,
             'border_max_fraction': 0.2, 'window_percentiles': (0.0, 100.0), 'intensity': 'none',
             'clahe_clip_limit': 0.01, 'lungs': 'none', 'lung_margin': 0.05}


@dataclasses.dataclass(frozen=True)
class PreprocessSettings:
  """config.data.preprocess as plain values (see the module docstring); the defaults are every step off."""

  working_size: int = 0
  acquisition_size: int = 0
  crop_borders: bool = False
  border_tolerance: float = 6.0
  border_max_fraction: float = 0.2
  window_percentiles: tuple[float, float] = (0.0, 100.0)
  intensity: str = 'none'
  clahe_clip_limit: float = 0.01
  lungs: str = 'none'
  lung_margin: float = 0.05
  mask_markers: bool = False  # config.data.mask_markers (step 0).

  @property
  def active(self) -> bool:
    """True when any step changes the image (else preprocess_image is the plain bilinear resize)."""
    return bool(self.working_size or self.crop_borders or self.window_percentiles != (0.0, 100.0)
                or self.intensity != 'none' or self.lungs != 'none' or self.mask_markers)

  def describe(self) -> str:
    """One line naming the steps that are on, in order (for the model card and logs)."""
    steps = ['burned-in markers filled'] if self.mask_markers else []
    if self.working_size:
      steps.append(f'area-averaged to {self.working_size} px' + (
          f' through {self.acquisition_size} px' if self.acquisition_size else ''))
    if self.crop_borders:
      steps.append(f'near-constant borders cropped (std <= {self.border_tolerance:g} grey levels, at most '
                   f'{self.border_max_fraction:g} a side)')
    if self.window_percentiles != (0.0, 100.0):
      steps.append(f'percentiles {self.window_percentiles[0]:g}-{self.window_percentiles[1]:g} windowed to 0-255')
    if self.intensity == 'equalize':
      steps.append('histogram equalised')
    elif self.intensity == 'clahe':
      steps.append(f'CLAHE (clip limit {self.clahe_clip_limit:g})')
    if self.lungs != 'none':
      steps.append(f'lungs {self.lungs} (margin {self.lung_margin:g})')
    return ', '.join(steps) if steps else 'none'


def settings_of(config: ml_collections.ConfigDict) -> PreprocessSettings:
  """config.data.preprocess validated into PreprocessSettings (all off in a config.json saved before it existed:
  run_fields.upgrade fills the defaults); ValueError names the field."""
  given = dict(config.data.preprocess.items())
  unknown = sorted(set(given) - set(_DEFAULTS))
  if unknown:
    raise ValueError(f'config.data.preprocess has unknown fields {unknown} (it takes {", ".join(_DEFAULTS)})')
  values = {**_DEFAULTS, **given}

  def refuse(field: str, why: str):
    raise ValueError(f'config.data.preprocess.{field}={values[field]!r} is not allowed: {why}')

  for field in ('working_size', 'acquisition_size'):
    if isinstance(values[field], bool) or not isinstance(values[field], int) or values[field] < 0:
      refuse(field, 'a side in pixels >= 0 (0: off)')
  if values['acquisition_size'] and not values['working_size']:
    refuse('acquisition_size', 'it needs config.data.preprocess.working_size (the resolution it goes back up to)')
  if values['acquisition_size'] and values['acquisition_size'] >= values['working_size']:
    refuse('acquisition_size', f'it must be below working_size={values["working_size"]}')
  if values['working_size'] and values['working_size'] < 8:
    refuse('working_size', 'at least 8 pixels')
  if not isinstance(values['crop_borders'], bool):
    refuse('crop_borders', 'True or False')
  if not 0 <= float(values['border_tolerance']) < 128:
    refuse('border_tolerance', 'grey levels in [0, 128)')
  if not 0 <= float(values['border_max_fraction']) < 0.5:
    refuse('border_max_fraction', 'a fraction of the side in [0, 0.5)')
  try:
    low, high = (float(v) for v in values['window_percentiles'])
  except (TypeError, ValueError):
    refuse('window_percentiles', 'a (low, high) pair of percentiles')
  if not 0 <= low < high <= 100:
    refuse('window_percentiles', 'need 0 <= low < high <= 100 ((0, 100): off)')
  if values['intensity'] not in INTENSITY:
    refuse('intensity', f'one of {INTENSITY}')
  if not 0 < float(values['clahe_clip_limit']) <= 1:
    refuse('clahe_clip_limit', 'in (0, 1]')
  if values['lungs'] not in LUNGS:
    refuse('lungs', f'one of {LUNGS}')
  if values['lungs'] != 'none':
    from lungjax.models import lung_unet  # pylint: disable=g-import-not-at-top  (JAX only when the lungs are asked for)
    import os  # pylint: disable=g-import-not-at-top
    if not os.path.isfile(lung_unet.WEIGHTS_PATH):
      refuse('lungs', f'it needs the shipped lung U-Net weights {lung_unet.WEIGHTS_PATH}, which are missing '
             '(bash results/lungs/regenerate.sh trains and exports them)')
  if not 0 <= float(values['lung_margin']) <= 1:
    refuse('lung_margin', 'a fraction of the lungs\' box in [0, 1]')
  mask_markers = config.data.mask_markers
  if not isinstance(mask_markers, bool):
    raise ValueError(f'config.data.mask_markers={mask_markers!r} is not allowed: True or False')
  return PreprocessSettings(
      working_size=int(values['working_size']), acquisition_size=int(values['acquisition_size']),
      crop_borders=bool(values['crop_borders']), border_tolerance=float(values['border_tolerance']),
      border_max_fraction=float(values['border_max_fraction']), window_percentiles=(low, high),
      intensity=str(values['intensity']), clahe_clip_limit=float(values['clahe_clip_limit']),
      lungs=str(values['lungs']), lung_margin=float(values['lung_margin']), mask_markers=mask_markers)


def working_resolution(image: Image.Image, working_size: int, acquisition_size: int = 0) -> Image.Image:
  """Step 1: the image at working_size x working_size, through acquisition_size x acquisition_size if set."""
  if acquisition_size:
    image = area_resize(image, acquisition_size)
  return area_resize(image, working_size)


def border_box(grey_HW: np.ndarray, tolerance: float, max_fraction: float) -> tuple[int, int, int, int]:
  """Step 2: (top, bottom, left, right) of the image without its near-constant edge rows and columns.

  A row (column) is border while its grey levels' standard deviation is at most `tolerance`, walking in from each
  edge; at most floor(max_fraction * side) rows (columns) go from each edge. Rows are measured across the columns
  still kept and columns across the rows still kept, alternately until nothing changes, so a frame on one side
  does not hide a letterbox bar on another.
  """
  height, width = grey_HW.shape
  values = grey_HW.astype(np.float32)
  max_rows, max_cols = int(math.floor(max_fraction * height)), int(math.floor(max_fraction * width))

  def run_from(std_L: np.ndarray, limit: int) -> int:
    flat = std_L[:limit] <= tolerance
    return int(limit if flat.all() else np.argmin(flat))

  box = (0, height, 0, width)
  for _ in range(4):  # Each pass can only shrink the box; two or three settle it in practice.
    top, bottom, left, right = box
    rows_H = values[:, left:right].std(axis=1)
    top, bottom = run_from(rows_H, max_rows), height - run_from(rows_H[::-1], max_rows)
    cols_W = values[top:bottom].std(axis=0)
    left, right = run_from(cols_W, max_cols), width - run_from(cols_W[::-1], max_cols)
    if (top, bottom, left, right) == box:
      break
    box = (top, bottom, left, right)
  return box


def window(grey_HW: np.ndarray, low_high: tuple[float, float]) -> np.ndarray:
  """Step 3: the low / high percentiles stretched to 0 / 255, the rest clipped (uint8)."""
  low, high = np.percentile(grey_HW, low_high)
  if high <= low:  # A flat image: nothing to stretch.
    return grey_HW.astype(np.uint8)
  stretched = (grey_HW.astype(np.float32) - low) * (255.0 / (high - low))
  return np.clip(np.rint(stretched), 0, 255).astype(np.uint8)


def normalise_intensity(grey_HW: np.ndarray, intensity: str, clip_limit: float) -> np.ndarray:
  """Step 4: histogram equalisation or CLAHE (scikit-image) of a uint8 grey image, back to uint8."""
  from skimage import exposure  # pylint: disable=g-import-not-at-top  (only where a run asks for it)
  if intensity == 'none' or grey_HW.max() == grey_HW.min():
    return grey_HW
  if intensity == 'equalize':
    out = exposure.equalize_hist(grey_HW, nbins=256)
  else:
    out = exposure.equalize_adapthist(grey_HW, clip_limit=clip_limit, nbins=256)
  return np.clip(np.rint(np.asarray(out) * 255.0), 0, 255).astype(np.uint8)


def apply_lungs(grey_HW: np.ndarray, mask_HW: np.ndarray, mode: str, margin: float) -> np.ndarray:
  """Step 5: 'crop' to the mask's bounding box grown by `margin` of its height / width on each side (clipped to the
  image), or 'fill' zeros outside the mask; an empty mask leaves the image as it is."""
  if mode == 'none':
    return grey_HW
  if mask_HW.shape != grey_HW.shape:
    raise ValueError(f'lung mask of shape {mask_HW.shape} for an image of shape {grey_HW.shape}')
  inside_HW = np.asarray(mask_HW) > 0
  if not inside_HW.any():
    return grey_HW
  if mode == 'fill':
    return np.where(inside_HW, grey_HW, 0).astype(grey_HW.dtype)
  rows, cols = np.flatnonzero(inside_HW.any(axis=1)), np.flatnonzero(inside_HW.any(axis=0))
  pad_r = int(round(margin * (rows[-1] - rows[0] + 1)))
  pad_c = int(round(margin * (cols[-1] - cols[0] + 1)))
  height, width = grey_HW.shape
  return grey_HW[max(rows[0] - pad_r, 0):min(rows[-1] + 1 + pad_r, height),
                 max(cols[0] - pad_c, 0):min(cols[-1] + 1 + pad_c, width)]


def preprocess_image(image: Image.Image, settings: PreprocessSettings, size: int,
                     lung_mask_HW: np.ndarray | None = None, lung_model: Any = None) -> np.ndarray:
  """The one preprocessing of a decoded image (PIL, any 8-bit mode; full size) to size x size x 3 uint8.

  Every step off: a bilinear resize of the image as it is (what lungjax always did). Otherwise the steps of the
  module docstring, in order, on the grey image. lung_mask_HW: the lungs of the image at its own size (settings.lungs
  'crop' / 'fill'; resized with the image); None: the lung U-Net's mask of `image` (lung_model, default the shipped
  lungs.load_lungs()).
  """
  if not settings.active:
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR).convert('RGB'), np.uint8)
  grey = image.convert('L')
  if settings.lungs != 'none' and lung_mask_HW is None:  # The U-Net reads the film as decoded, before any step.
    from lungjax.models import lung_unet  # pylint: disable=g-import-not-at-top
    lung_mask_HW = lung_unet.lung_mask_of(image, lung_model)
  if settings.mask_markers:
    from lungjax.data import markers  # pylint: disable=g-import-not-at-top  (markers imports scikit-image lazily)
    grey = Image.fromarray(markers.mask_markers(np.asarray(grey, np.uint8), lung_mask_HW)[0])
  mask = None
  if settings.lungs != 'none':
    mask = Image.fromarray((np.asarray(lung_mask_HW) > 0).astype(np.uint8) * 255)
  if settings.working_size:
    grey = working_resolution(grey, settings.working_size, settings.acquisition_size)
    if mask is not None:
      mask = mask.resize(grey.size, Image.Resampling.NEAREST)
  grey_HW = np.asarray(grey, np.uint8)
  if settings.crop_borders:
    top, bottom, left, right = border_box(grey_HW, settings.border_tolerance, settings.border_max_fraction)
    grey_HW = grey_HW[top:bottom, left:right]
    if mask is not None:
      mask = mask.crop((left, top, right, bottom))
  if settings.window_percentiles != (0.0, 100.0):
    grey_HW = window(grey_HW, settings.window_percentiles)
  grey_HW = normalise_intensity(grey_HW, settings.intensity, settings.clahe_clip_limit)
  if mask is not None:
    grey_HW = apply_lungs(grey_HW, np.asarray(mask), settings.lungs, settings.lung_margin)
  out = area_resize(Image.fromarray(np.ascontiguousarray(grey_HW)), size)
  return np.repeat(np.asarray(out, np.uint8)[..., None], 3, axis=-1)


def record(settings: PreprocessSettings) -> dict[str, Any]:
  """The settings as a JSON-able dict (fingerprints, model cards)."""
  found = {**dataclasses.asdict(settings), 'window_percentiles': list(settings.window_percentiles),
           'steps': settings.describe()}
  if not settings.mask_markers:  # Off: the record (and old runs' fingerprints) as before the field existed.
    del found['mask_markers']
  if settings.lungs != 'none':  # Which lung model made the masks: other weights, other images.
    from lungjax.models import lung_unet  # pylint: disable=g-import-not-at-top
    found['lung_weights'] = lung_unet.weights_record()
  return found
