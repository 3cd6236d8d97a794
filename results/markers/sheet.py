"""Contact sheet: lungjax's marker detections on 8 real films of each shared source (seeded choice).

python results/markers/sheet.py ../shared/data results/markers/detections_sheet.png
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
from lungjax.data import markers  # pylint: disable=g-import-not-at-top

data, out = sys.argv[1], sys.argv[2]
sources = {'kaggle': 'covid19-image-dataset/train', 'radiography': 'covid19-radiography-sample',
           'cohen': 'cohen-covid-chestxray/images'}
rng = random.Random(7)
fig, axes = plt.subplots(3, 8, figsize=(24, 10))
for row, (name, folder) in enumerate(sources.items()):
  paths = sorted(glob.glob(os.path.join(data, folder, '*', '*')))
  for ax, path in zip(axes[row], rng.sample(paths, 8)):
    grey = np.asarray(Image.open(path).convert('L'))
    found = markers.find_markers(grey)
    ax.imshow(grey, cmap='gray', vmin=0, vmax=255)
    for m in found:
      ax.add_patch(Rectangle((m.left, m.top), m.right - m.left, m.bottom - m.top, fill=False, lw=1.5,
                             ec={'bright': 'red', 'dark': 'cyan', 'both': 'yellow'}[m.polarity]))
    ax.set_title(f'{name} {os.path.basename(path)[:20]}: {len(found)}', fontsize=8)
    ax.axis('off')
fig.suptitle('marker detections on real films (red bright, cyan dark, yellow both)')
fig.tight_layout()
fig.savefig(out + '.tmp.png', dpi=55, metadata={'Software': None})
os.replace(out + '.tmp.png', out)
