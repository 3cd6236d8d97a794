"""`lungjax audit --markers` and `--strip --strip_markers` end to end, on synthetic films with planted markers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

FONT = '/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf'
pytestmark = pytest.mark.skipif(not os.path.exists(FONT), reason='DejaVu fonts are absent')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 400

# Per film: (text, grey level, (top, left), plate) of every planted marker and the place the audit must give it.
FILMS = {
    'srcA/Covid/one.png': [('R', 250, (20, 20), False, 'top-left')],
    'srcA/Covid/two.png': [('L', 250, (20, 362), False, 'top-right'), ('AP', 5, (340, 20), True, 'bottom-left')],
    'srcA/Covid/plain.png': [],
    'srcA/Normal/three.png': [('R', 250, (20, 20), False, 'top-left'), ('PORTABLE', 245, (360, 130), False,
                                                                        'bottom edge')],
    'srcB/Normal/four.png': [('R', 245, (24, 24), False, 'top-left')],
    'srcB/Normal/plain.png': [],
}


def film(seed: int) -> np.ndarray:
  """A smooth synthetic film: dark edges, a brighter body with two darker lung fields, film grain."""
  rng = np.random.default_rng(seed)
  rows, cols = np.mgrid[0:SIZE, 0:SIZE] / SIZE
  body = 60 + 90 * np.exp(-((rows - 0.55) ** 2 / 0.12 + (cols - 0.5) ** 2 / 0.08))
  lungs = np.exp(-((rows - 0.5) ** 2 / 0.03 + (cols - 0.32) ** 2 / 0.006)) + np.exp(
      -((rows - 0.5) ** 2 / 0.03 + (cols - 0.68) ** 2 / 0.006))
  return np.clip(body - 50 * lungs + rng.normal(0, 3, (SIZE, SIZE)), 0, 255).astype(np.uint8)


def plant(grey_HW: np.ndarray, text: str, level: int, corner: tuple[int, int], plate: bool
          ) -> tuple[int, int, int, int]:
  """Draws 20 px tall text (on a white plate when `plate`); returns the text's box (top, left, bottom, right)."""
  top, left = corner
  if plate:
    grey_HW[top - 8:top + 40, left - 8:left + 60] = 235
  image = Image.fromarray(grey_HW)
  font = ImageFont.truetype(FONT, int(20 / 0.72))
  x0, y0, x1, y1 = font.getbbox(text)
  ImageDraw.Draw(image).text((left - x0, top - y0), text, fill=level, font=font)
  grey_HW[:] = np.asarray(image)
  return (top, left, top + y1 - y0, left + x1 - x0)


@pytest.fixture(scope='module')
def planted(tmp_path_factory):
  """The films written as PNGs under a tmp folder; returns (root, {relative path: [(box, place)]}, {path: grey})."""
  root = tmp_path_factory.mktemp('films')
  boxes, greys = {}, {}
  for seed, (relative, plants) in enumerate(FILMS.items()):
    grey_HW = film(seed)
    boxes[relative] = [(plant(grey_HW, text, level, corner, plate), place)
                       for text, level, corner, plate, place in plants]
    os.makedirs(root / os.path.dirname(relative), exist_ok=True)
    Image.fromarray(grey_HW).save(root / relative)
    greys[relative] = grey_HW
  return root, boxes, greys


def audit(root, *flags_):
  result = subprocess.run([sys.executable, '-m', 'lungjax.tools.audit', 'srcA', 'srcB', '--out=out', *flags_], cwd=root,
                          capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': REPO}, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def inside(inner, outer) -> bool:
  return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def test_audit_markers_lists_every_planted_marker_and_tabulates_them(planted):
  root, boxes, _ = planted
  result = audit(root, '--markers')
  report = json.loads((root / 'out' / 'markers.json').read_text())
  assert report['n_images'] == len(FILMS) and report['n_skipped_undecodable'] == 0
  rows = {row['path']: row for row in report['images']}  # Paths relative to the working folder.
  assert sorted(rows) == sorted(FILMS)
  for relative, plants in boxes.items():
    row = rows[relative]
    assert row['n_markers'] == len(plants), (relative, row)
    for box, place in plants:  # Each planted text lies inside one reported box, in the right place.
      hits = [m for m in row['markers'] if inside(box, m['box'])]
      assert len(hits) == 1 and hits[0]['place'] == place, (relative, box, row['markers'])
  table = report['table']
  assert sorted(table) == ['srcA / Covid', 'srcA / Normal', 'srcB / Normal']
  for key, cell in table.items():
    source, class_name = key.split(' / ')
    films = {r: p for r, p in boxes.items() if r.startswith(f'{source}/{class_name}/')}
    assert cell['n_films'] == len(films)
    assert cell['n_with_markers'] == sum(bool(p) for p in films.values())
    for place in ('top-left', 'top-right', 'bottom-left', 'bottom-right', 'bottom edge', 'top edge'):
      assert cell[place] == sum(any(pl == place for _, pl in p) for p in films.values()), (key, place)
  markdown = (root / 'out' / 'markers.md').read_text()
  assert '| srcA / Covid | 3 | 67% | 33% | 33% | 33% |' in markdown, markdown  # top-left, top-right, bottom-left.
  assert '| srcB / Normal | 2 | 50% | 50% | 0% | 0% |' in markdown, markdown
  assert f'markers     {sum(bool(p) for p in FILMS.values())} of {len(FILMS)} images' in result.stdout


def test_strip_markers_copies_have_the_markers_filled_and_nothing_else_changed(planted):
  root, boxes, greys = planted
  audit(root, '--strip=clean', '--strip_markers')
  report = json.loads((root / 'out' / 'audit.json').read_text())
  assert report['strip']['methods'] == {'marker-masked png': len(FILMS)}
  assert report['strip']['n_marker_regions_filled'] == sum(len(p) for p in FILMS.values())
  for relative, plants in boxes.items():
    copy_HW = np.asarray(Image.open(root / 'clean' / relative))
    original_HW = greys[relative]
    assert copy_HW.shape == original_HW.shape
    changed_HW = copy_HW != original_HW
    if not plants:
      assert not changed_HW.any(), relative  # A film without markers is copied pixel for pixel.
    for (top, left, bottom, right), _ in plants:
      text_hw = copy_HW[top:bottom, left:right]
      assert changed_HW[top:bottom, left:right].mean() > 0.2, relative  # The print is gone ...
      assert int(text_hw.max()) - int(text_hw.min()) <= 1, relative  # ... filled with one flat level.
    outside_HW = np.ones_like(changed_HW)
    for (top, left, bottom, right), _ in plants:
      outside_HW[max(0, top - 30):bottom + 30, max(0, left - 30):right + 30] = False
    assert not changed_HW[outside_HW].any(), relative  # Nothing away from the markers changed.
  assert sorted(os.listdir(root / 'srcA' / 'Covid')) == ['one.png', 'plain.png', 'two.png']  # Inputs untouched.
