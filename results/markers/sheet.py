"""Contact sheets: lungjax's marker detections (boxes drawn) on 24 real, unplanted films of each shared source.

python results/markers/sheet.py ../shared/data results/markers
writes results/markers/detections_<source>.png for kaggle, radiography and cohen (films chosen by a seeded draw,
every class of the source included; red: bright print, cyan: dark print, yellow: both).
"""
import glob
import os
import random
import sys

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from matplotlib.patches import Rectangle  # pylint: disable=g-import-not-at-top
from PIL import Image  # pylint: disable=g-import-not-at-top

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..'))
from lungjax.runtime import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
from lungjax.data import markers  # pylint: disable=g-import-not-at-top

data, out_dir = sys.argv[1], sys.argv[2]
sources = {'kaggle': 'covid19-image-dataset/train', 'radiography': 'covid19-radiography-sample',
           'cohen': 'cohen-covid-chestxray/images'}
PER_SOURCE, COLUMNS = 24, 6
for name, folder in sources.items():
  rng = random.Random(7)
  paths = sorted(p for p in glob.glob(os.path.join(data, folder, '*', '*'))
                 if p.lower().endswith(('.png', '.jpg', '.jpeg')))
  chosen = sorted(rng.sample(paths, PER_SOURCE))
  fig, axes = plt.subplots(PER_SOURCE // COLUMNS, COLUMNS, figsize=(3.0 * COLUMNS, 3.2 * PER_SOURCE // COLUMNS))
  total = 0
  for ax, path in zip(axes.ravel(), chosen):
    grey = np.asarray(Image.open(path).convert('L'))
    found = markers.find_markers(grey)
    total += len(found)
    ax.imshow(grey, cmap='gray', vmin=0, vmax=255)
    for m in found:
      ax.add_patch(Rectangle((m.left - 0.5, m.top - 0.5), m.right - m.left, m.bottom - m.top, fill=False, lw=1.5,
                             ec={'bright': 'red', 'dark': 'cyan', 'both': 'yellow'}[m.polarity]))
    class_name = os.path.basename(os.path.dirname(path))
    ax.set_title(f'{class_name} / {os.path.basename(path)[:22]}: {len(found)}', fontsize=8)
    ax.axis('off')
  fig.suptitle(f'{name} ({folder}): marker detections on {PER_SOURCE} real films, {total} regions '
               '(red bright, cyan dark, yellow both)', fontsize=11)
  fig.tight_layout()
  workdir_lib.write_figure(os.path.join(out_dir, f'detections_{name}.png'), fig, dpi=60, metadata={'Software': None})
  plt.close(fig)
