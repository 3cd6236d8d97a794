"""Lung overlap of the marker detector: its marker pixels inside cohen's human lung masks (issue 24 part 3).

python -m benchmarks.markers_lungs --data=../shared/data --out=results/markers/lungs_overlap.json \
    --sheet=results/markers/lungs_overlap_sheet.png

Every cohen film with a lung mask (metadata.csv's lung_mask column, 302 films) goes through
markers.find_markers WITHOUT the mask (as `lungjax audit --markers` and `config.data.mask_markers` run it, since no
lung model is given there); a film's overlap is the number of pixels of its marker mask (markers.boxes_mask of the
boxes) that lie inside its human lung mask. The target is 0 on every film: markers sit at the film's edges and
outside the body. The report gives the total, the films with any overlap (each with its boxes and per-box
overlap), and the same per half of benchmarks.markers_planted's path-hash split (dev: where the detector's rules
were looked at; test: the planted benchmark's scored half). The optional sheet shows a crop around every box that
touches the lungs (the lung mask outlined in green, the box in red).

--predicted_lungs: the same with the shipped lung U-Net's mask of each film handed to the detector
(markers.find_markers / marker_mask with lung_mask_HW = lungjax.segment(film)), as `lungjax audit --markers` and
`config.data.mask_markers` run it; the overlap is still counted against the HUMAN mask, once per guard of
--lung_guards (the predicted lungs grown by that fraction of the short side, markers.grown_lungs). Each guard's
figures are also split by the U-Net's own split (results/lungs/report.json lists its 60 held-out test films):
`unet_trained` (films whose masks it trained or was validated on: optimistic) and `unet_test` (never seen).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags
from PIL import Image

from benchmarks import markers_planted
from lungjax.runtime import workdir as workdir_lib
from lungjax.data import markers

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string('data', '../shared/data', 'The shared data folder (cohen-covid-chestxray inside it).')
  flags.DEFINE_string('out', None, 'Where the JSON report goes (a new file or one this script wrote).')
  flags.DEFINE_string('sheet', '', 'Optional PNG: crops of every detected box that touches a lung mask.')
  flags.DEFINE_bool('predicted_lungs', False, 'Hand the shipped lung U-Net\'s mask of each film to the detector.')
  flags.DEFINE_list('lung_guards', [], 'With --predicted_lungs: the guards (fractions of the short side) to score, '
                    'e.g. 0,0.01,0.02; empty: markers.LUNG_GUARD alone.')
  flags.DEFINE_string('lungs_report', 'results/lungs/report.json', 'The lung U-Net\'s report (its test films).')


def films_with_masks(data: str) -> list[tuple[str, str]]:
  """(film path, lung-mask path) of every metadata.csv row with a lung mask, in the table's order."""
  root = os.path.join(data, 'cohen-covid-chestxray')
  with open(os.path.join(root, 'metadata.csv'), newline='') as f:
    return [(os.path.join(root, row['file']), os.path.join(root, row['lung_mask']))
            for row in csv.DictReader(f) if row.get('lung_mask')]


def film_overlap(grey_HW: np.ndarray, lungs_HW: np.ndarray, predicted_HW: np.ndarray | None = None,
                 lung_guard: float = markers.LUNG_GUARD) -> dict[str, Any]:
  """Marker boxes of one film and how many of their marker-mask pixels lie inside its (human) lung mask, total and
  per box; predicted_HW: a lung mask handed to the detector (markers.find_markers / marker_mask, grown by
  lung_guard), or None."""
  found = markers.find_markers(grey_HW, predicted_HW, lung_guard)
  mask_HW = markers.boxes_mask([m.box for m in found], grey_HW.shape)
  if predicted_HW is not None:  # What markers.marker_mask / mask_markers fill when given the lungs.
    mask_HW &= ~markers.grown_lungs(predicted_HW, grey_HW.shape, lung_guard)
  boxes = []
  for m in found:
    t, l, b, r = m.box
    boxes.append({'box': list(m.box), 'polarity': m.polarity, 'lung_pixels': int(lungs_HW[t:b, l:r].sum())})
  return {'n_markers': len(found), 'lung_pixels': int((mask_HW & lungs_HW).sum()), 'markers': boxes}


def summarise(films: Sequence[dict[str, Any]]) -> dict[str, Any]:
  hit = [f for f in films if f['lung_pixels']]
  return {'n_films': len(films), 'lung_pixels': sum(f['lung_pixels'] for f in films),
          'films_with_lung_pixels': len(hit),
          'boxes_touching_lungs': sum(1 for f in hit for m in f['markers'] if m['lung_pixels']),
          'n_markers': sum(f['n_markers'] for f in films),
          'films_with_markers': sum(f['n_markers'] > 0 for f in films)}


def unet_test_films(lungs_report: str) -> set[str]:
  """Paths (relative to the data folder) of the lung U-Net's held-out test films, from its report."""
  with open(lungs_report) as f:
    report = json.load(f)
  return {os.path.join('cohen-covid-chestxray', film['file']) for film in report['test']['films']}


def _report(films: Sequence[dict[str, Any]], unet_test: set[str] | None) -> dict[str, Any]:
  report = {'all': summarise(films),
            'halves': {h: summarise([f for f in films if f['half'] == h]) for h in ('dev', 'test')}}
  if unet_test is not None:
    report['unet_split'] = {'unet_trained': summarise([f for f in films if f['path'] not in unet_test]),
                            'unet_test': summarise([f for f in films if f['path'] in unet_test])}
  return {**report, 'films_with_lung_pixels': [f for f in films if f['lung_pixels']],
          'per_film_lung_pixels': {f['path']: f['lung_pixels'] for f in films}}


def run(data: str, predicted_lungs: bool = False, lung_guards: Sequence[float] = (),
        lungs_report: str = 'results/lungs/report.json') -> tuple[dict[str, Any], list]:
  """The overlap report (with --predicted_lungs, one per guard) and the crops of the first guard's boxes."""
  start = time.time()
  segment, unet_test = None, None
  guards = list(lung_guards) or [markers.LUNG_GUARD]
  if predicted_lungs:
    import lungjax  # pylint: disable=g-import-not-at-top  (JAX only when the U-Net is asked for)
    segment = lungjax.segment
    unet_test = unet_test_films(lungs_report)
  films = {guard: [] for guard in guards}
  crops = []
  for path, mask_path in films_with_masks(data):
    grey_HW = np.asarray(Image.open(path).convert('L'))
    lungs_HW = np.asarray(Image.open(mask_path).convert('L')) > 0
    if lungs_HW.shape != grey_HW.shape:
      raise ValueError(f'{mask_path}: mask of shape {lungs_HW.shape} for a film of shape {grey_HW.shape}')
    relative = os.path.relpath(path, data)
    predicted_HW = np.asarray(segment(grey_HW), bool) if segment else None
    for guard in guards:
      film = {'path': relative, 'half': markers_planted.half_of(relative),
              **film_overlap(grey_HW, lungs_HW, predicted_HW, guard)}
      films[guard].append(film)
      if guard == guards[0]:
        crops += [(relative, grey_HW, lungs_HW, m) for m in film['markers'] if m['lung_pixels']]
  if not predicted_lungs:
    report = {'lungs_given_to_detector': 'none', **_report(films[guards[0]], None)}
  else:
    report = {'lungs_given_to_detector': 'lungjax.segment (shipped U-Net)', 'lung_guards': guards,
              'unet_test_films': len(unet_test),
              'by_guard': {f'{guard:g}': _report(films[guard], unet_test) for guard in guards}}
  report['seconds'] = round(time.time() - start, 1)
  return report, crops


def crop_sheet(crops: Sequence[tuple[str, np.ndarray, np.ndarray, dict[str, Any]]], path: str) -> None:
  """A crop around each box that touches the lungs (3x the box, at least a fifth of the side), lungs outlined."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib.patches import Rectangle  # pylint: disable=g-import-not-at-top
  columns = 6
  n_rows = max(1, (len(crops) + columns - 1) // columns)
  fig, axes = plt.subplots(n_rows, columns, figsize=(3.0 * columns, 3.2 * n_rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis('off')
  if not crops:
    axes[0, 0].set_title('no detected box touches a lung mask', fontsize=9)
  for ax, (name, grey_HW, lungs_HW, m) in zip(axes.ravel(), crops):
    t, l, b, r = m['box']
    height, width = grey_HW.shape
    half = max(b - t, r - l, min(height, width) // 10) * 1.5
    cy, cx = (t + b) / 2, (l + r) / 2
    y0, y1 = int(max(0, cy - half)), int(min(height, cy + half))
    x0, x1 = int(max(0, cx - half)), int(min(width, cx + half))
    ax.imshow(grey_HW[y0:y1, x0:x1], cmap='gray', vmin=0, vmax=255)
    ax.contour(lungs_HW[y0:y1, x0:x1].astype(float), levels=[0.5], colors='lime', linewidths=0.8)
    ax.add_patch(Rectangle((l - x0 - 0.5, t - y0 - 0.5), r - l, b - t, fill=False, ec='red', lw=1.2))
    ax.set_title(f'{os.path.basename(name)[:26]}\n{m["polarity"]}, {m["lung_pixels"]} lung px', fontsize=7)
  fig.suptitle('detected marker boxes (red) that touch the human lung mask (green)', fontsize=10)
  fig.tight_layout()
  workdir_lib.write_figure(path, fig, dpi=70, metadata={'Software': None})
  plt.close(fig)


def main(argv: Sequence[str]) -> None:
  del argv
  report, crops = run(FLAGS.data, FLAGS.predicted_lungs, [float(g) for g in FLAGS.lung_guards], FLAGS.lungs_report)
  report['command'] = 'python -m benchmarks.markers_lungs ' + ' '.join(sys.argv[1:])
  workdir_lib.write_text(FLAGS.out, json.dumps(report, indent=1) + '\n')
  if FLAGS.sheet:
    crop_sheet(crops, FLAGS.sheet)
  for guard, part in report.get('by_guard', {'none': report}).items():
    rows = [('all', part['all']), *part['halves'].items(), *part.get('unet_split', {}).items()]
    for name, row in rows:
      print(f'guard {guard:<5} {name:<12} films {row["n_films"]:>4} lung pixels {row["lung_pixels"]:>7} on '
            f'{row["films_with_lung_pixels"]} films ({row["boxes_touching_lungs"]} boxes); films with markers '
            f'{row["films_with_markers"]}')


if __name__ == '__main__':
  _define_flags()
  flags.mark_flags_as_required(['out'])
  app.run(main)
