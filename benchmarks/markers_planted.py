"""Planted-marker validation of lungjax/data/markers.py on real films of every shared source (issue 24 part 3).

python -m benchmarks.markers_planted --data=../shared/data --split=test --out=results/markers/planted.json

Each film gets PLANTS_PER_FILM markers drawn onto it: a word of VOCABULARY (L, R, AP, PORTABLE, arrows, ...) in
one of FONTS (DejaVu and Liberation: sans, serif, mono, bold), its letters 2-8% of the film's short side tall,
white (235-255) or black (0-20) at random; where the film around it is within PLATE_CONTRAST grey levels of the
ink, on a plate of the opposite colour (a hospital label). Half go in a corner, half along an edge (its middle
third), 2-10% of the short side in from the edge; never on a real marker the detector finds on the unplanted
film, never on another planted one, never on the lungs (cohen: the human lung mask grown by 2% of the side; other
sources: CENTRAL_LUNGS, a conservative central box).

The rules (fixed before any run on the test half):
- a planted marker is found when the detector's new boxes cover at least 50% of its text's box (its pixels with
  ink coverage >= 0.5);
- a detected box is new when less than 50% of it lies in boxes found on the same film unplanted (the film's own
  real markers are not false positives); a new box is a true detection when at least 50% of it lies in a planted
  marker's neighbourhood (its text's box grown by one letter height on every side: the detector pads its boxes
  and finds a plate's edge with its text), else a false positive; precision = true new boxes / new boxes;
- lungs: pixels of the planted film's marker mask inside the human lung mask (cohen films that have one), and
  inside CENTRAL_LUNGS (every film); the unplanted film's too.
- with --predicted_lungs the detector is handed the lung U-Net's mask of the (plain, then planted) film, and the
  plants avoid the lungs on EVERY source: the human mask where one exists, else the U-Net's mask of the plain film,
  each grown by 2% of the side (a marker printed on the lungs is one the detector must leave: it never masks lung);
- films are split by a hash of their path into a dev half (where the detector's thresholds were set) and a test
  half (reported); the seed picks the films and the plants.
"""

from __future__ import annotations

import collections
import csv
import glob
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw, ImageFont

from lungjax.runtime import workdir as workdir_lib
from lungjax.data import markers

FLAGS = flags.FLAGS
FONT_DIR = '/usr/share/fonts/truetype'
FONTS = ('dejavu/DejaVuSans.ttf', 'dejavu/DejaVuSans-Bold.ttf', 'dejavu/DejaVuSerif.ttf',
         'dejavu/DejaVuSansMono.ttf', 'dejavu/DejaVuSansCondensed-Bold.ttf', 'liberation/LiberationSans-Regular.ttf',
         'liberation/LiberationSans-Bold.ttf', 'liberation/LiberationSerif-Regular.ttf',
         'liberation/LiberationMono-Regular.ttf', 'liberation/LiberationSansNarrow-Regular.ttf')
ARROW_FONT = 'dejavu/DejaVuSans-Bold.ttf'  # Liberation has no arrows.
VOCABULARY = ('L', 'R', 'AP', 'PA', 'LT', 'RT', 'PORTABLE', 'SUPINE', 'ERECT', 'AP SUPINE', 'SEMI ERECT', 'DAY 3',
              '\u2192', '\u2190', '\u2191', '\u2193')
PLANTS_PER_FILM = 2
PLATE_CONTRAST = 90.0
CENTRAL_LUNGS = (0.25, 0.75, 0.25, 0.75)  # rows top, bottom; columns left, right (fractions of the side).
SOURCES = {'kaggle': 'covid19-image-dataset/train', 'radiography': 'covid19-radiography-sample',
           'cohen': 'cohen-covid-chestxray/images'}


def _define_flags() -> None:
  flags.DEFINE_string('data', '../shared/data', 'The shared data folder (its README names the three sources).')
  flags.DEFINE_enum('split', 'test', ['dev', 'test'], 'Which half of the films (by path hash) to plant on.')
  flags.DEFINE_integer('per_source', 100, 'Films per source (0: every film of the half).')
  flags.DEFINE_integer('seed', 0, 'Picks the films and the plants.')
  flags.DEFINE_string('out', None, 'Where the JSON report goes (a new file or one this script wrote).')
  flags.DEFINE_string('sheet', '', 'Optional PNG: a contact sheet of planted films with their detections.')
  flags.DEFINE_bool('predicted_lungs', False, 'Hand the shipped lung U-Net\'s mask of each film (plain and planted) '
                    'to the detector, grown by --lung_guard, as `lungjax audit --markers` and '
                    'config.data.mask_markers run it.')
  flags.DEFINE_float('lung_guard', markers.LUNG_GUARD, 'With --predicted_lungs: the guard (markers.grown_lungs).')


def half_of(relative_path: str) -> str:
  """'dev' or 'test': the film's half, by the parity of the MD5 of its path relative to the data folder."""
  return 'dev' if int(hashlib.md5(relative_path.encode()).hexdigest(), 16) % 2 == 0 else 'test'


def list_films(data: str) -> dict[str, list[tuple[str, str | None]]]:
  """Per source, (film path, lung-mask path or None) for every image file."""
  masks = {}
  table = os.path.join(data, 'cohen-covid-chestxray', 'metadata.csv')
  if os.path.exists(table):
    with open(table, newline='') as f:
      for row in csv.DictReader(f):
        if row.get('lung_mask'):
          masks[os.path.join(data, 'cohen-covid-chestxray', row['file'])] = os.path.join(
              data, 'cohen-covid-chestxray', row['lung_mask'])
  films = {}
  for source, folder in SOURCES.items():
    paths = sorted(p for p in glob.glob(os.path.join(data, folder, '*', '*'))
                   if p.lower().endswith(('.png', '.jpg', '.jpeg')))
    films[source] = [(p, masks.get(p)) for p in paths]
  return films


def _overlap(a: Sequence[int], b: Sequence[int]) -> int:
  """Pixels shared by two (top, left, bottom, right) boxes."""
  return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _area(box: Sequence[int]) -> int:
  return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def _covered(box: Sequence[int], mask_HW: np.ndarray) -> float:
  """Share of a box's pixels that are True in mask_HW."""
  top, left, bottom, right = box
  return float(mask_HW[top:bottom, left:right].mean()) if _area(box) else 0.0


def central_box(shape: tuple[int, int]) -> tuple[int, int, int, int]:
  """CENTRAL_LUNGS in pixels of a film of `shape`."""
  height, width = shape
  top, bottom, left, right = CENTRAL_LUNGS
  return (int(top * height), int(left * width), int(np.ceil(bottom * height)), int(np.ceil(right * width)))


def render(text: str, font_path: str, size_px: int) -> np.ndarray:
  """The word's ink coverage (float32 0-1), tight to its drawn pixels."""
  font = ImageFont.truetype(font_path, size_px)
  left, top, right, bottom = font.getbbox(text)
  canvas = Image.new('L', (right - left + 4, bottom - top + 4), 0)
  ImageDraw.Draw(canvas).text((2 - left, 2 - top), text, fill=255, font=font)
  ink = np.asarray(canvas, np.float32) / 255.0
  rows, cols = np.flatnonzero(ink.max(1) >= 0.5), np.flatnonzero(ink.max(0) >= 0.5)
  return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def plant(grey_HW: np.ndarray, forbidden_HW: np.ndarray, rng: np.random.Generator, n: int
          ) -> tuple[np.ndarray, list[dict[str, Any]]]:
  """The film with n markers drawn on it (module docstring) and, per marker, its text box, region box and kind."""
  out = grey_HW.astype(np.float32)
  height, width = grey_HW.shape
  side = min(height, width)
  taken = forbidden_HW.copy()
  plants = []
  for index in range(n):
    where = 'corner' if index % 2 == 0 else 'edge'
    for _ in range(50):  # Placements that land on something forbidden are drawn again.
      text = str(rng.choice(VOCABULARY))
      arrow = not text.isascii()
      font = ARROW_FONT if arrow else FONTS[int(rng.integers(len(FONTS)))]
      letter = rng.uniform(0.02, 0.08) * side
      ink = render(text, os.path.join(FONT_DIR, font), max(6, int(round(letter / 0.72))))
      h, w = ink.shape
      if w > 0.45 * width or h > 0.2 * height:
        continue
      margin = rng.uniform(0.02, 0.1) * side
      if where == 'corner':
        top = margin if rng.random() < 0.5 else height - margin - h
        left = margin if rng.random() < 0.5 else width - margin - w
      elif rng.random() < 0.5:  # Top or bottom edge, its middle third.
        top = margin if rng.random() < 0.5 else height - margin - h
        left = rng.uniform(width / 3, 2 * width / 3 - w) if w < width / 3 else (width - w) / 2
      else:
        left = margin if rng.random() < 0.5 else width - margin - w
        top = rng.uniform(height / 3, 2 * height / 3 - h) if h < height / 3 else (height - h) / 2
      top, left = int(round(top)), int(round(left))
      text_box = (top, left, top + h, left + w)
      pad = int(round(0.3 * h))
      plate_box = (max(0, top - pad), max(0, left - pad), min(height, top + h + pad), min(width, left + w + pad))
      if plate_box[0] != top - pad or plate_box[1] != left - pad or plate_box[2] != top + h + pad or \
          plate_box[3] != left + w + pad or taken[plate_box[0]:plate_box[2], plate_box[1]:plate_box[3]].any():
        continue
      white = bool(rng.random() < 0.5)
      level = rng.uniform(235, 255) if white else rng.uniform(0, 20)
      around = np.median(out[plate_box[0]:plate_box[2], plate_box[1]:plate_box[3]])
      plate = abs(around - level) < PLATE_CONTRAST
      if plate:
        out[plate_box[0]:plate_box[2], plate_box[1]:plate_box[3]] = 255.0 - level
      region = out[top:top + h, left:left + w]
      region[:] = region * (1 - ink) + level * ink
      taken[plate_box[0]:plate_box[2], plate_box[1]:plate_box[3]] = True
      plants.append({'text': text, 'font': os.path.basename(font), 'letter_fraction': round(letter / side, 4),
                     'colour': 'white' if white else 'black', 'plate': bool(plate), 'where': where,
                     'text_box': text_box, 'region_box': plate_box if plate else text_box,
                     'near_box': (max(0, top - h), max(0, left - h), min(height, top + 2 * h), min(width, left + w + h))})
      break
  return np.clip(np.rint(out), 0, 255).astype(np.uint8), plants


def evaluate_film(grey_HW: np.ndarray, lungs_HW: np.ndarray | None, rng: np.random.Generator,
                  segment: Any = None, lung_guard: float = markers.LUNG_GUARD) -> dict[str, Any]:
  """Plants on one film and scores the detector on it (module docstring's rules); segment: a function of a film
  returning its lung mask, handed to the detector (grown by lung_guard), or None."""
  shape = grey_HW.shape

  def detect(film_HW: np.ndarray) -> list[markers.Marker]:
    if segment is None:
      return markers.find_markers(film_HW)
    return markers.find_markers(film_HW, np.asarray(segment(film_HW), bool), lung_guard)

  before = detect(grey_HW)
  before_HW = markers.boxes_mask([m.box for m in before], shape)
  if lungs_HW is None and segment is not None:  # Off the lungs as the lung model sees them (no human mask here).
    predicted_HW = markers.grown_lungs(np.asarray(segment(grey_HW), bool), shape, 0.0)
    grow = int(0.02 * min(shape)) | 1
    from scipy import ndimage  # pylint: disable=g-import-not-at-top
    forbidden_HW = (ndimage.maximum_filter(predicted_HW, size=grow) | before_HW |
                    markers.boxes_mask([central_box(shape)], shape))
  elif lungs_HW is not None:
    grow = int(0.02 * min(shape)) | 1
    from scipy import ndimage  # pylint: disable=g-import-not-at-top
    forbidden_HW = ndimage.maximum_filter(lungs_HW, size=grow) | before_HW
  else:
    forbidden_HW = markers.boxes_mask([central_box(shape)], shape) | before_HW
  planted_HW, plants = plant(grey_HW, forbidden_HW, rng, PLANTS_PER_FILM)
  after = detect(planted_HW)
  after_HW = markers.boxes_mask([m.box for m in after], shape)
  new = [m.box for m in after if _covered(m.box, before_HW) < 0.5]
  new_HW = markers.boxes_mask(new, shape)
  for p in plants:
    p['found'] = _covered(p['text_box'], new_HW) >= 0.5
  if segment is not None:  # The same plants, the detector given the film alone: what the lungs cost.
    before_film_HW = markers.boxes_mask([m.box for m in markers.find_markers(grey_HW)], shape)
    new_film_HW = markers.boxes_mask([m.box for m in markers.find_markers(planted_HW)
                                      if _covered(m.box, before_film_HW) < 0.5], shape)
    for p in plants:
      p['found_film_only'] = _covered(p['text_box'], new_film_HW) >= 0.5
  true_new = [box for box in new if any(_overlap(box, p['near_box']) >= 0.5 * _area(box) for p in plants)]
  central_HW = markers.boxes_mask([central_box(shape)], shape)
  film = {'plants': plants, 'n_new': len(new), 'n_true_new': len(true_new), 'n_before': len(before),
          'central_pixels_planted': int((after_HW & central_HW).sum()),
          'central_pixels_unplanted': int((before_HW & central_HW).sum())}
  if lungs_HW is not None:
    film['lung_pixels_planted'] = int((after_HW & lungs_HW).sum())
    film['lung_pixels_unplanted'] = int((before_HW & lungs_HW).sum())
  film['_images'] = (planted_HW, after, plants)
  return film


def _rate(found: int, total: int) -> dict[str, Any]:
  return {'found': found, 'of': total, 'rate': round(found / total, 4) if total else None}


def summarise(films: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Recall by every plant attribute, precision, lung pixels, over the films given."""
  plants = [p for f in films for p in f['plants']]
  recall = {'all': _rate(sum(p['found'] for p in plants), len(plants))}
  if plants and all('found_film_only' in p for p in plants):
    recall['film_only'] = _rate(sum(p['found_film_only'] for p in plants), len(plants))
  for key, of in (('colour', lambda p: p['colour']), ('plate', lambda p: 'plate' if p['plate'] else 'no plate'),
                  ('where', lambda p: p['where']), ('font', lambda p: p['font']),
                  ('letter height', lambda p: f'{int(p["letter_fraction"] * 100)}-{int(p["letter_fraction"] * 100) + 1}% '
                   'of the short side'), ('text', lambda p: p['text'])):
    groups = collections.defaultdict(list)
    for p in plants:
      groups[of(p)].append(p['found'])
    recall[key] = {name: _rate(sum(v), len(v)) for name, v in sorted(groups.items())}
  n_new, n_true = sum(f['n_new'] for f in films), sum(f['n_true_new'] for f in films)
  out = {'n_films': len(films), 'n_planted': len(plants), 'recall': recall,
         'precision': {'true_new_boxes': n_true, 'new_boxes': n_new,
                       'rate': round(n_true / n_new, 4) if n_new else None},
         'central_pixels_planted': sum(f['central_pixels_planted'] for f in films),
         'central_pixels_unplanted': sum(f['central_pixels_unplanted'] for f in films),
         'films_with_real_markers': sum(f['n_before'] > 0 for f in films)}
  with_lungs = [f for f in films if 'lung_pixels_planted' in f]
  if with_lungs:
    out['lung_mask_films'] = len(with_lungs)
    out['lung_pixels_planted'] = sum(f['lung_pixels_planted'] for f in with_lungs)
    out['lung_pixels_unplanted'] = sum(f['lung_pixels_unplanted'] for f in with_lungs)
    out['films_with_lung_pixels'] = sum(f['lung_pixels_planted'] > 0 or f['lung_pixels_unplanted'] > 0
                                        for f in with_lungs)
  return out


def contact_sheet(rows: Sequence[tuple[str, np.ndarray, list, list]], path: str) -> None:
  """Planted films (planted boxes green, detections red / cyan for bright / dark) in a grid."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib.patches import Rectangle  # pylint: disable=g-import-not-at-top
  columns = 6
  n_rows = (len(rows) + columns - 1) // columns
  fig, axes = plt.subplots(n_rows, columns, figsize=(3.0 * columns, 3.2 * n_rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis('off')
  for ax, (title, grey_HW, found, plants) in zip(axes.ravel(), rows):
    ax.imshow(grey_HW, cmap='gray', vmin=0, vmax=255)
    for p in plants:
      t, l, b, r = p['text_box']
      ax.add_patch(Rectangle((l - 0.5, t - 0.5), r - l, b - t, fill=False, ec='lime', lw=1.0, ls='--'))
    for m in found:
      ax.add_patch(Rectangle((m.left - 0.5, m.top - 0.5), m.right - m.left, m.bottom - m.top, fill=False,
                             ec='red' if m.polarity == 'bright' else 'cyan', lw=1.0))
    missed = sum(not p['found'] for p in plants)
    ax.set_title(f'{title}\nplanted {len(plants)}, missed {missed}', fontsize=7)
  fig.suptitle('planted markers (green dashed) and detections (red: bright, cyan: dark)', fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.savefig(path + '.tmp.png', dpi=70, metadata={'Software': None})
  plt.close(fig)
  os.replace(path + '.tmp.png', path)


def run(data: str, split: str, per_source: int, seed: int, predicted_lungs: bool = False,
        lung_guard: float = markers.LUNG_GUARD) -> tuple[dict[str, Any], list]:
  """Plants on up to per_source films of each source's `split` half; returns the report and sheet rows."""
  rng = np.random.default_rng(seed)
  report: dict[str, Any] = {'split': split, 'seed': seed, 'per_source': per_source, 'sources': {}}
  segment = None
  if predicted_lungs:
    import lungjax  # pylint: disable=g-import-not-at-top  (JAX only when the U-Net is asked for)
    segment = lungjax.segment
    report['lungs_given_to_detector'] = {'model': 'lungjax.segment (shipped U-Net)', 'lung_guard': lung_guard}
  every, sheet = [], []
  start = time.time()
  for source, films in list_films(data).items():
    mine = [f for f in films if half_of(os.path.relpath(f[0], data)) == split]
    if per_source and len(mine) > per_source:
      mine = [mine[i] for i in sorted(rng.choice(len(mine), per_source, replace=False))]
    scored = []
    for path, mask_path in mine:
      grey_HW = np.asarray(Image.open(path).convert('L'))
      lungs_HW = None
      if mask_path:
        lungs_HW = np.asarray(Image.open(mask_path).convert('L')) > 0
        if lungs_HW.shape != grey_HW.shape:
          raise ValueError(f'{mask_path}: mask of shape {lungs_HW.shape} for a film of shape {grey_HW.shape}')
      film = evaluate_film(grey_HW, lungs_HW, rng, segment, lung_guard)
      planted_HW, found, plants = film.pop('_images')
      film['path'] = os.path.relpath(path, data)
      scored.append(film)
      if len([r for r in sheet if r[0].startswith(source)]) < 6:
        sheet.append((f'{source} {os.path.basename(path)[:22]}', planted_HW, found, plants))
    report['sources'][source] = summarise(scored)
    every += scored
  report['all'] = summarise(every)
  report['films'] = every
  report['seconds'] = round(time.time() - start, 1)
  return report, sheet


def main(argv: Sequence[str]) -> None:
  del argv
  report, sheet = run(FLAGS.data, FLAGS.split, FLAGS.per_source, FLAGS.seed, FLAGS.predicted_lungs, FLAGS.lung_guard)
  report['command'] = 'python -m benchmarks.markers_planted ' + ' '.join(sys.argv[1:])
  workdir_lib.write_atomic(FLAGS.out, json.dumps(report, indent=1) + '\n')
  if FLAGS.sheet:
    contact_sheet(sheet, FLAGS.sheet)
  for name, row in [*report['sources'].items(), ('all', report['all'])]:
    lungs = f', lung-mask pixels {row["lung_pixels_planted"]} (unplanted {row["lung_pixels_unplanted"]})' \
        if 'lung_pixels_planted' in row else ''
    film_only = row['recall'].get('film_only', {}).get('rate')
    print(f'{name:<12} films {row["n_films"]:>4} planted {row["n_planted"]:>4} recall '
          f'{row["recall"]["all"]["rate"]} (film alone {film_only}) precision {row["precision"]["rate"]} '
          f'({row["precision"]["new_boxes"]} new)'
          f', central pixels {row["central_pixels_planted"]}{lungs}')


if __name__ == '__main__':
  _define_flags()
  flags.mark_flags_as_required(['out'])
  app.run(main)
