"""lungjax segment --dir=FOLDER --out=DIR [--weights=NPZ]: one lung-mask PNG (0/255, the film's size) per image.

Walks FOLDER for .jpg / .jpeg / .png / .dcm files, mirrors its sub-folders under DIR (DIR/<sub>/<stem>.png) and
never writes into FOLDER: an --out inside --dir is refused. Each mask is lungjax.lungs.segment's (the shipped U-Net,
or --weights), written by lungjax.runtime.workdir.write_image: atomically, never through a link nor over a file lungjax
did not write (DIR/.lungjax-outputs.json lists what it wrote; any other existing file is refused, naming it).
Unreadable files are counted and listed at the end (exit status 1 if any), never skipped silently.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np
from PIL import Image

from lungjax.runtime import workdir as workdir_lib

EXTENSIONS = ('.jpg', '.jpeg', '.png', '.dcm', '.dicom')


def find_images(folder: str) -> list[str]:
  """Image files under folder (relative paths, sorted), walking sub-folders; hidden entries left out."""
  found = []
  for top, dirs, files in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    for name in sorted(files):
      if not name.startswith('.') and name.lower().endswith(EXTENSIONS):
        found.append(os.path.relpath(os.path.join(top, name), folder))
  return found


def _inside(path: str, folder: str) -> bool:
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return path == folder or path.startswith(folder + os.sep)


def write_png(path: str, mask_HW: np.ndarray, root: str | None = None) -> None:
  """mask as a 0/255 greyscale PNG by workdir.write_image under the output folder root (atomic, never through a
  link or over a file lungjax did not write)."""
  image = Image.fromarray((np.asarray(mask_HW) > 0).astype(np.uint8) * 255)
  workdir_lib.write_image(path, image, root=root)


def segment_folder(folder: str, out: str, weights: str | None = None) -> dict[str, object]:
  """Writes out/<relative stem>.png for every image of folder; returns {'written', 'unreadable': [(path, why)]}."""
  from lungjax import lungs  # pylint: disable=g-import-not-at-top  (imports JAX)
  from lungjax.data import images  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'--dir={folder!r} is not a folder')
  if _inside(out, folder):
    raise ValueError(f'--out={out!r} is inside --dir={folder!r}: lungjax segment never writes into the input folder')
  model = lungs.load_lungs(weights)
  os.makedirs(out, exist_ok=True)
  written, unreadable = [], []
  for relative in find_images(folder):
    target_rel = os.path.splitext(relative)[0] + '.png'
    try:
      with images.open_image(os.path.join(folder, relative)) as opened:
        pixels = images.to_rgb_uint8(opened)
    except (OSError, ValueError, SyntaxError, images.BadImageError) as error:
      unreadable.append((relative, f'{type(error).__name__}: {error}'))
      continue
    write_png(os.path.join(out, target_rel), model.masks([pixels])[0], root=out)
    written.append(target_rel)
  return {'written': written, 'unreadable': unreadable}


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='lungjax segment', description=__doc__.splitlines()[0])
  parser.add_argument('--dir', required=True, help='folder of films (walked recursively)')
  parser.add_argument('--out', required=True, help='where the mask PNGs go (not inside --dir)')
  parser.add_argument('--weights', default=None, help='an .npz of lungjax.lungs.save_weights (default: shipped)')
  args = parser.parse_args(argv)
  try:
    result = segment_folder(args.dir, args.out, args.weights)
  except (ValueError, FileNotFoundError, FileExistsError, workdir_lib.ForeignFileError) as error:
    print(f'lungjax segment: {error}', file=sys.stderr)
    return 2
  print(f'wrote {len(result["written"])} lung masks under {os.path.abspath(args.out)}; '
        f'{len(result["unreadable"])} unreadable')
  for path, why in result['unreadable']:
    print(f'  unreadable: {path}: {why}', file=sys.stderr)
  return 1 if result['unreadable'] else 0


if __name__ == '__main__':
  sys.exit(main())
