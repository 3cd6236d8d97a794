"""Burned-in markers: find and mask the text and symbols printed on a film (L, R, AP, PORTABLE, arrows, labels).

Classical image processing, no learned weights (issue 24 part 3). `find_markers(grey_HW)` returns the marker
regions of one grey film as boxes; `marker_mask(grey_HW)` the same regions as a boolean H x W mask;
`mask_markers(grey_HW)` the film with them filled. The steps, at a working resolution whose short side is
WORK_SIDE pixels (boxes are mapped back to the film's own pixels):

1. contrast: the white top-hat (the film minus its grey opening by a TOPHAT_FRACTION x short-side square) keeps
   bright structures narrower than the square: letters' strokes, wires; the black top-hat (closing minus film)
   the dark ones. Burned-in text is printed at or near the film's extreme grey levels with sharp edges, so a pixel
   is a candidate where its top-hat is at least MIN_CONTRAST grey levels.
2. components: 8-connected components of the candidate pixels, each kept only if it is letter-like:
   - its box's height in [MIN_HEIGHT, MAX_HEIGHT] of the short side and its width at most MAX_WIDTH;
   - its mean top-hat at least MIN_MEAN_CONTRAST (sharp print, not a soft rib edge);
   - stroke width (twice the largest distance from a component pixel to the background, by the Euclidean
     distance transform) at most MAX_STROKE of its box's larger side and at most MAX_STROKE_FRACTION of the short
     side: letters are drawn with thin strokes, blobs are not;
   - extent (pixels / box area) in [MIN_EXTENT, MAX_EXTENT] and solidity (pixels / convex hull) at most
     MAX_SOLIDITY: neither a thin line (a wire, a film edge) nor a filled blob (an electrode, a bone end);
   - not touching the image's border (film edges, collimator shutters) and its centre outside the central lung
     zone (CENTRAL_ZONE: rows and columns between those fractions of the side), where a film's lungs always lie;
   - in the border band: its box's nearest side at most EDGE_BAND of the short side from the image's edge.
     Markers are printed along a film's edges and in its corners, outside the body; what a component further in
     is, on the films looked at (results/markers/README.md), is an arrow, arrowhead or zone number an author drew
     on the lungs of a published figure, or a device (ECG clip, pacemaker) on the chest: masking those masks lung.
3. words: letters whose boxes are within WORD_GAP of their height of each other, of similar height (ratio at most
   2) and overlapping in rows, are merged into one box (PORTABLE, AP SUPINE); every box is grown by PAD of its
   height on each side, clipped to the image.

A `lung_mask_HW` (the shipped lung U-Net's: `lungjax audit --markers` and `config.data.mask_markers` pass it) is
first grown by `lung_guard` (default LUNG_GUARD) of the short side, since a predicted mask's edge can fall a few
pixels inside the lungs' true edge; every component that touches the grown lungs is dropped and no pixel of them is
ever filled. LUNG_GUARD was chosen by the rule in results/markers/README.md ("Lung guard"). Boxes are (top, left,
bottom, right), bottom/right exclusive, in the film's pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

WORK_SIDE = 512
TOPHAT_FRACTION = 0.06
MIN_CONTRAST = 50.0
MIN_MEAN_CONTRAST = 70.0
MIN_HEIGHT, MAX_HEIGHT, MAX_WIDTH = 0.012, 0.12, 0.12
MAX_STROKE, MAX_STROKE_FRACTION = 0.45, 0.03
MIN_EXTENT, MAX_EXTENT, MAX_SOLIDITY = 0.12, 0.85, 0.92
CENTRAL_ZONE = (0.25, 0.75)
EDGE_BAND = 0.12
MIN_SHARPNESS = 0.3
WORD_GAP, PAD = 1.0, 0.15
MIN_PIXELS = 12
LUNG_GUARD = 0.0
LUNG_MIN_PART = 0.1


@dataclasses.dataclass(frozen=True)
class Marker:
  """One marker region: its box in the film's pixels, 'bright', 'dark' or 'both', and how many letters it groups."""

  top: int
  left: int
  bottom: int
  right: int
  polarity: str
  n_parts: int = 1

  @property
  def box(self) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), bottom and right exclusive."""
    return (self.top, self.left, self.bottom, self.right)


def _work_image(grey_HW: np.ndarray) -> tuple[np.ndarray, float]:
  """The film at the working resolution (short side WORK_SIDE, aspect kept) as float32, and film px per work px."""
  height, width = grey_HW.shape
  scale = WORK_SIDE / min(height, width)
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  image = Image.fromarray(np.ascontiguousarray(grey_HW, np.uint8))
  resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
  work = np.asarray(image.resize(size, resample), np.float32)
  return work, 1.0 / scale


def _in_central_zone(box: Sequence[int], height: int, width: int) -> bool:
  """True when a (top, left, bottom, right) box shares a pixel with CENTRAL_ZONE."""
  low, high = CENTRAL_ZONE
  top, left, bottom, right = box
  return bottom > low * height and top < high * height and right > low * width and left < high * width


def _letters(tophat_HW: np.ndarray, gradient_HW: np.ndarray, lungs_HW: np.ndarray | None
             ) -> list[tuple[int, int, int, int]]:
  """Boxes (work pixels) of the letter-like components of a top-hat image (module docstring, step 2)."""
  height, width = tophat_HW.shape
  side = min(height, width)
  labels_HW, n = ndimage.label(tophat_HW >= MIN_CONTRAST, structure=np.ones((3, 3), bool))
  if not n:
    return []
  from skimage import measure  # pylint: disable=g-import-not-at-top  (scikit-image is a core dependency)
  boxes = []
  for region in measure.regionprops(labels_HW, intensity_image=tophat_HW):
    top, left, bottom, right = region.bbox
    box_h, box_w = bottom - top, right - left
    if region.area < MIN_PIXELS or not MIN_HEIGHT * side <= box_h <= MAX_HEIGHT * side or box_w > MAX_WIDTH * side:
      continue
    if top == 0 or left == 0 or bottom == height or right == width:
      continue
    if min(top, left, height - bottom, width - right) > EDGE_BAND * side:
      continue
    if _in_central_zone(region.bbox, height, width) or region.intensity_mean < MIN_MEAN_CONTRAST:
      continue
    outline = region.image & ~ndimage.binary_erosion(region.image)
    if gradient_HW[region.slice][outline].mean() < MIN_SHARPNESS * region.intensity_mean:
      continue
    if not MIN_EXTENT <= region.extent <= MAX_EXTENT or region.solidity > MAX_SOLIDITY:
      continue
    stroke = 2.0 * ndimage.distance_transform_edt(np.pad(region.image, 1)).max()
    if stroke > MAX_STROKE * max(box_h, box_w) or stroke > MAX_STROKE_FRACTION * side:
      continue
    if lungs_HW is not None and lungs_HW[region.slice][region.image].any():
      continue
    boxes.append((top, left, bottom, right))
  return boxes


def _words(boxes: Sequence[tuple[int, int, int, int]]) -> list[tuple[tuple[int, int, int, int], int]]:
  """Merges letter boxes into word boxes (module docstring, step 3); returns (box, number of letters)."""
  groups = [[list(box), 1] for box in boxes]
  merged = True
  while merged:
    merged = False
    for i in range(len(groups)):
      for j in range(i + 1, len(groups)):
        (t1, l1, b1, r1), (t2, l2, b2, r2) = groups[i][0], groups[j][0]
        h1, h2 = b1 - t1, b2 - t2
        if max(h1, h2) > 2 * min(h1, h2):
          continue
        if min(b1, b2) <= max(t1, t2):  # No shared rows.
          continue
        gap = max(l1, l2) - min(r1, r2)
        if gap > WORD_GAP * max(h1, h2):
          continue
        groups[i] = [[min(t1, t2), min(l1, l2), max(b1, b2), max(r1, r2)], groups[i][1] + groups[j][1]]
        del groups[j]
        merged = True
        break
      if merged:
        break
  return [(tuple(box), n) for box, n in groups]


def grown_lungs(lung_mask_HW: np.ndarray, shape: tuple[int, int], lung_guard: float = LUNG_GUARD) -> np.ndarray:
  """Bool mask of `shape`: the lungs (nonzero pixels of lung_mask_HW, resized to `shape`; of its 8-connected parts
  only those of at least LUNG_MIN_PART of the largest one's area) grown by lung_guard of the short side (Euclidean
  distance). The small parts go because the lung U-Net marks printed markers themselves as specks of "lung" (seen on
  planted films, results/markers/README.md): kept, they would hide the very markers they sit on."""
  if not 0 <= lung_guard <= 0.5:
    raise ValueError(f'lung_guard={lung_guard!r}: a fraction of the short side in [0, 0.5]')
  lung_mask_HW = np.asarray(lung_mask_HW) > 0
  if lung_mask_HW.shape != tuple(shape):
    resized = Image.fromarray(lung_mask_HW.astype(np.uint8) * 255).resize(shape[::-1], Image.Resampling.BILINEAR)
    lungs_HW = np.asarray(resized) > 0
  else:
    lungs_HW = lung_mask_HW
  labels_HW, n = ndimage.label(lungs_HW, structure=np.ones((3, 3), bool))
  if n > 1:
    areas_P = np.bincount(labels_HW.ravel())[1:]
    lungs_HW = np.isin(labels_HW, 1 + np.flatnonzero(areas_P >= LUNG_MIN_PART * areas_P.max()))
  radius = lung_guard * min(shape)
  if radius > 0 and lungs_HW.any():
    # Work at a side of at most WORK_SIDE (the distance transform of a 3,000 px film is slow), then back up.
    scale = min(1.0, WORK_SIDE / min(shape))
    small_shape = (max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale)))
    small_HW = np.asarray(Image.fromarray(lungs_HW.astype(np.uint8) * 255).resize(
        small_shape[::-1], Image.Resampling.BILINEAR)) > 0
    near_HW = ndimage.distance_transform_edt(~small_HW) <= radius * scale + 1.0
    lungs_HW = lungs_HW | (np.asarray(Image.fromarray(near_HW.astype(np.uint8) * 255).resize(
        shape[::-1], Image.Resampling.NEAREST)) > 0)
  return lungs_HW


def find_markers(grey_HW: np.ndarray, lung_mask_HW: np.ndarray | None = None,
                 lung_guard: float = LUNG_GUARD) -> list[Marker]:
  """The burned-in marker regions of one grey film (H x W, uint8 or anything 0-255), sorted by position.

  lung_mask_HW: optional H x W lungs (nonzero inside), grown by lung_guard of the short side (grown_lungs); a
  component touching them is never a marker.
  """
  grey_HW = np.asarray(grey_HW)
  if grey_HW.ndim != 2:
    raise ValueError(f'find_markers takes one grey H x W image, got shape {grey_HW.shape}')
  height, width = grey_HW.shape
  if min(height, width) < 16:
    return []
  work_HW, film_per_work = _work_image(np.clip(grey_HW, 0, 255))
  lungs_HW = None
  if lung_mask_HW is not None:
    if np.shape(lung_mask_HW) != grey_HW.shape:
      raise ValueError(f'lung mask of shape {np.shape(lung_mask_HW)} for an image of shape {grey_HW.shape}')
    lungs_HW = grown_lungs(lung_mask_HW, work_HW.shape, lung_guard)
  k = max(3, int(round(TOPHAT_FRACTION * min(work_HW.shape)))) | 1
  # Grey levels per film pixel: an upsampled film's edges are as sharp as they were in its own pixels.
  gradient_HW = np.hypot(ndimage.sobel(work_HW, 0), ndimage.sobel(work_HW, 1)) / 8.0 * max(1.0, 1.0 / film_per_work)
  found = []
  for polarity, tophat in (('bright', ndimage.white_tophat), ('dark', ndimage.black_tophat)):
    for box, n_parts in _words(_letters(tophat(work_HW, size=(k, k)), gradient_HW, lungs_HW)):
      top, left, bottom, right = box
      pad = PAD * (bottom - top)
      grown = (top - pad, left - pad, bottom + pad, right + pad)
      if _in_central_zone(grown, *work_HW.shape):
        continue
      found.append(Marker(
          top=max(0, int(np.floor((top - pad) * film_per_work))),
          left=max(0, int(np.floor((left - pad) * film_per_work))),
          bottom=min(height, int(np.ceil((bottom + pad) * film_per_work))),
          right=min(width, int(np.ceil((right + pad) * film_per_work))),
          polarity=polarity, n_parts=n_parts))
  return sorted(_union_overlapping(found), key=lambda m: (m.top, m.left, m.polarity))


def _union_overlapping(found: Sequence[Marker]) -> list[Marker]:
  """Merges markers whose boxes share pixels (a bright letter's dark surround, a word found in both polarities)
  into one region; its polarity is 'bright', 'dark' or 'both'."""
  regions = list(found)
  merged = True
  while merged:
    merged = False
    for i in range(len(regions)):
      for j in range(i + 1, len(regions)):
        a, b = regions[i], regions[j]
        if min(a.bottom, b.bottom) > max(a.top, b.top) and min(a.right, b.right) > max(a.left, b.left):
          regions[i] = Marker(min(a.top, b.top), min(a.left, b.left), max(a.bottom, b.bottom), max(a.right, b.right),
                              a.polarity if a.polarity == b.polarity else 'both', a.n_parts + b.n_parts)
          del regions[j]
          merged = True
          break
      if merged:
        break
  return regions


def boxes_mask(boxes: Sequence[tuple[int, int, int, int]], shape: tuple[int, int]) -> np.ndarray:
  """A bool mask of `shape`, True inside every (top, left, bottom, right) box."""
  mask_HW = np.zeros(shape, bool)
  for top, left, bottom, right in boxes:
    mask_HW[top:bottom, left:right] = True
  return mask_HW


def _regions(grey_HW: np.ndarray, lung_mask_HW: np.ndarray | None, lung_guard: float
             ) -> tuple[np.ndarray, int]:
  """(the bool H x W mask of find_markers' boxes minus the grown lungs, the number of boxes)."""
  found = find_markers(grey_HW, lung_mask_HW, lung_guard)
  mask_HW = boxes_mask([m.box for m in found], grey_HW.shape)
  if lung_mask_HW is not None:
    mask_HW &= ~grown_lungs(lung_mask_HW, grey_HW.shape, lung_guard)
  return mask_HW, len(found)


def marker_mask(grey_HW: np.ndarray, lung_mask_HW: np.ndarray | None = None,
                lung_guard: float = LUNG_GUARD) -> np.ndarray:
  """Bool H x W: True inside every marker region of find_markers (minus the grown lungs when lung_mask_HW is given)."""
  return _regions(np.asarray(grey_HW), lung_mask_HW, lung_guard)[0]


def fill(grey_HW: np.ndarray, mask_HW: np.ndarray) -> np.ndarray:
  """The film with every masked pixel replaced by the median of the unmasked pixels bordering its region (a flat
  patch of the surrounding grey, so no new edge or level tells the masking apart); uint8 like the input."""
  out_HW = np.array(grey_HW, copy=True)
  if not mask_HW.any():
    return out_HW
  labels_HW, n = ndimage.label(mask_HW)
  for index, region in enumerate(ndimage.find_objects(labels_HW), start=1):
    rows, cols = region
    grown = (slice(max(rows.start - 2, 0), rows.stop + 2), slice(max(cols.start - 2, 0), cols.stop + 2))
    inside_hw = labels_HW[grown] == index
    ring_hw = ndimage.binary_dilation(inside_hw, iterations=2) & ~mask_HW[grown]
    values = grey_HW[grown][ring_hw]
    level = np.median(values) if values.size else np.median(grey_HW[~mask_HW]) if (~mask_HW).any() else 0
    out_HW[grown][inside_hw] = np.asarray(level).astype(out_HW.dtype)
  del n
  return out_HW


def mask_markers(grey_HW: np.ndarray, lung_mask_HW: np.ndarray | None = None,
                 lung_guard: float = LUNG_GUARD) -> tuple[np.ndarray, int]:
  """The film with its marker regions filled (fill; never a pixel of the grown lungs), and how many were found."""
  grey_HW = np.asarray(grey_HW)
  mask_HW, n = _regions(grey_HW, lung_mask_HW, lung_guard)
  return fill(grey_HW, mask_HW), n
