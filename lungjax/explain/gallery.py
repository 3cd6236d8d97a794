"""--mode=explain: Grad-CAM overlays (lungjax.explain.gradcam) of a folder's images and a gallery of them."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import matplotlib
import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from lungjax import checkpoints, config_check, inference
from lungjax.explain import gradcam
from lungjax.runtime import workdir as workdir_lib
from lungjax.data import folders, images, loading, preprocess

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

# PNGs carry no metadata at all (no software tag, no source image text).
_PNG_METADATA = {'Software': None}
OVERLAY_ALPHA = 0.6  # Opacity of the colour map where the heatmap is 1; where it is 0 the image shows as is.
GALLERY_MAX_IMAGES = 60  # gallery.png shows the first of these; every image still gets its own overlay.


def overlay(pixels_HWC: np.ndarray, heatmap_HW: np.ndarray) -> np.ndarray:
  """Blends the heatmap's 'jet' colours over the image in proportion to the heatmap (uint8 HWC)."""
  colours_HWC = matplotlib.colormaps['jet'](np.asarray(heatmap_HW))[..., :3] * 255.0
  alpha_HW1 = OVERLAY_ALPHA * np.asarray(heatmap_HW, np.float32)[..., None]
  blended = pixels_HWC.astype(np.float32) * (1.0 - alpha_HW1) + colours_HWC * alpha_HW1
  return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def save_overlay(pixels_HWC: np.ndarray, heatmap_HW: np.ndarray, path: str, root: str | None = None) -> None:
  """Writes the overlay as a PNG without metadata under the output folder root (workdir.write_image: atomic,
  listed in root's manifest once whole, never through a link nor outside root), creating its folder."""
  workdir_lib.write_image(path, Image.fromarray(overlay(pixels_HWC, heatmap_HW)), root=root)


def overlay_names(relative_paths: Sequence[str]) -> list[str]:
  """Overlay names that keep each input's whole name ('a/x.jpg' → 'a/x.jpg.gradcam.png'): x.jpg and x.png never
  share one. Two inputs of the same name (case aside, e.g. from two folders) get 'x.jpg.gradcam-2.png', ..."""
  names, used = [], set()
  for relative in relative_paths:
    name, count = f'{relative}.gradcam.png', 1
    while name.lower() in used:
      count += 1
      name = f'{relative}.gradcam-{count}.png'
    used.add(name.lower())
    names.append(name)
  return names


GALLERY_TILE_INCHES = 2.2  # The width of a gallery column.
GALLERY_TITLE_POINTS = 7  # The font size of a tile's title.
# A character of the title font is at most this many font sizes wide on average (DejaVu Sans: about 0.55-0.6).
_CHARACTER_WIDTH = 0.66


def middle_ellipsis(text: str, limit: int) -> str:
  """`text` cut to `limit` characters by an ellipsis in its middle (the start and the end, which tell files apart,
  stay); text within the limit comes back as it is."""
  if len(text) <= limit:
    return text
  if limit <= 1:
    return '…'[:limit]
  head = limit // 2
  tail = limit - 1 - head
  return text[:head] + '…' + (text[-tail:] if tail else '')


def title_limit(tile_inches: float, font_points: float = GALLERY_TITLE_POINTS) -> int:
  """The characters of a title line that fit a tile `tile_inches` wide in a font of `font_points`."""
  return max(4, int(tile_inches * 72 / (font_points * _CHARACTER_WIDTH)))


def plot_gallery(overlays_NHWC: np.ndarray, titles: Sequence[str], colours: Sequence[str], path: str,
                 title: str) -> None:
  """Draws the overlays in a grid, each titled (e.g. true/predicted labels and confidence); each title line longer
  than its tile holds (title_limit) is shortened in its middle (middle_ellipsis)."""
  n = len(overlays_NHWC)
  columns = min(n, 6)
  rows = math.ceil(n / columns)
  width = GALLERY_TILE_INCHES * max(columns, 3)
  limit = title_limit(width / columns * 0.9)  # constrained layout leaves some of the tile as margin.
  fig, axes = plt.subplots(rows, columns, figsize=(width, 2.8 * rows + 0.3), squeeze=False,
                           layout='constrained')
  for index, ax in enumerate(axes.flat):
    ax.axis('off')
    if index < n:
      ax.imshow(overlays_NHWC[index], interpolation='nearest')
      shortened = '\n'.join(middle_ellipsis(line, limit) for line in titles[index].split('\n'))
      ax.set_title(shortened, fontsize=GALLERY_TITLE_POINTS, color=colours[index])
  fig.suptitle(title, fontsize=9)
  workdir_lib.write_figure(path, fig, dpi=100, metadata=_PNG_METADATA)
  plt.close(fig)


def _read_folder(folder: str, config: ml_collections.ConfigDict) -> tuple[images.DecodedImages, list[list[str]]]:
  """Decodes a folder of class sub-folders (labels known) or a flat folder of images (labels -1)."""
  entries = sorted(os.scandir(folder), key=lambda e: e.name)
  loose = [e.path for e in entries if e.is_file() and folders.is_image_file(e.name) and not e.name.startswith('.')]
  if any(e.is_dir() and not e.name.startswith('.') for e in entries):
    loaded = loading.load_folder(folder, config, require_all_classes=False)
    for path in loose:
      logging.warning('skipped %s: an image beside the class folders (its class is unknown)', path)
    return loaded.decoded, ([list(item) for item in loaded.skipped_report()] +
                            [[path, 'beside the class folders'] for path in loose])
  records = [folders.Record(path, -1) for path in loose]
  decoded = images.decode_records(records, config.data.image_size, skip_bad_images=config.data.skip_bad_images,
                                  threads=config.data.decode_threads, preprocess=preprocess.settings_of(config))
  ignored = [[e.path, 'not a .jpg/.jpeg/.png file'] for e in entries if e.is_file() and e.path not in loose]
  return decoded, ignored + [list(item) for item in decoded.skipped]


def explain_folder(config: ml_collections.ConfigDict, workdir: str,
                   overridden: Sequence[str] | None = None) -> dict[str, Any]:
  """Writes a Grad-CAM overlay per image of config.explain.dir, gallery.png and explain.json; returns the summary.

  The folder holds class sub-folders (true labels known) or images directly (labels unknown). Output goes to
  workdir/explain/<folder name>-<hash of its resolved path>/ (workdir.folder_identity), mirroring the class
  sub-folders ('Covid/x.jpg' → 'Covid/x.jpg.gradcam.png'), written as one unit (its .complete last); a file there
  that lungjax did not write, or that is one of the inputs, is an error (workdir.claim_outputs).
  The model, classes and image size come from the run's config.json: `config` may change only
  checkpoints.INFERENCE_FIELDS, and an `overridden` field (None: any field) that differs is a ValueError
  (checkpoints.run_config_for_inference).
  """
  config = checkpoints.run_config_for_inference(workdir, config, overridden)
  config_check.check_explain(config)  # config.explain.dir and class_name, against the run's classes.
  folder, classes, class_name = config.explain.dir, tuple(config.data.classes), config.explain.class_name
  explained = classes.index(class_name) if class_name else -1
  model = inference.load(workdir, config=config)
  gradcam.check_layer(model.module, model.variables, model.image_size, config.explain.layer)  # Before decoding.
  decoded, skipped = _read_folder(folder, config)
  if not len(decoded):
    raise ValueError(f'config.explain.dir={folder!r}: no decodable images left to explain')
  name = workdir_lib.folder_identity([folder])  # Two folders of one base name: two outputs (issue 26 High 2).
  out_dir = os.path.join(workdir, 'explain', name)
  names = overlay_names([os.path.relpath(path, folder) for path in decoded.paths])
  workdir_lib.claim_outputs(out_dir, [*names, 'gallery.png', 'explain.json'],
                            inputs=[*decoded.paths, *(path for path, _ in skipped)])
  workdir_lib.begin_unit(out_dir)  # One unit: incomplete until explain.json and the marker are written.
  probs_NC, heatmaps_NHW = model.explain_pixels(decoded.images_NHWC, np.full(len(decoded), explained, np.int32),
                                                desc='Grad-CAM')

  rows, titles, colours = [], [], []
  for index, (path, overlay_name) in enumerate(zip(decoded.paths, names)):
    predicted = int(probs_NC[index].argmax())
    label = int(decoded.labels_N[index])
    target = predicted if explained < 0 else explained
    overlay_path = os.path.join(out_dir, overlay_name)
    save_overlay(decoded.images_NHWC[index], heatmaps_NHW[index], overlay_path, root=out_dir)
    row = {'file': folders.shown_name(path), 'overlay': folders.shown_name(overlay_path),
           'true': classes[label] if label >= 0 else None, 'predicted': classes[predicted],
           'confidence': float(probs_NC[index, predicted]), 'explained_class': classes[target]}
    if row['file'] != path:  # Not UTF-8: shown escaped, and its exact bytes (the path to open) as hex, as predict.
      row.update(file_bytes_hex=os.fsencode(path).hex(), overlay_bytes_hex=os.fsencode(overlay_path).hex())
    rows.append(row)
    titles.append(f'{folders.shown_name(os.path.relpath(path, folder))}\n' + (f'true {classes[label]}\n' if label >= 0 else '') +
                  f'pred {classes[predicted]} {probs_NC[index, predicted]:.0%}' +
                  (f'\nmap of {classes[target]}' if explained >= 0 else ''))
    colours.append('black' if label < 0 else ('tab:green' if label == predicted else 'tab:red'))

  shown = min(len(rows), GALLERY_MAX_IMAGES)
  overlays_NHWC = np.stack([overlay(decoded.images_NHWC[i], heatmaps_NHW[i]) for i in range(shown)])
  gallery = os.path.join(out_dir, 'gallery.png')
  caption = (f'Grad-CAM of {config.explain.layer} on {workdir_lib.legacy_folder_name([folder])}, checkpoint step '
             f'{model.checkpoint_step}')
  if shown < len(rows):
    caption += f' (first {shown} of {len(rows)} images)'
  plot_gallery(overlays_NHWC, titles[:shown], colours[:shown], gallery, caption)

  summary: dict[str, Any] = {
      'folder': os.path.abspath(folder), 'out_dir': os.path.abspath(out_dir), 'gallery': os.path.abspath(gallery),
      'checkpoint_step': model.checkpoint_step, 'layer': config.explain.layer, 'class_name': class_name,
      'n_images': len(rows), 'labelled': bool(np.all(decoded.labels_N >= 0)),
      'skipped_images': [[folders.shown_name(str(part)) for part in item] for item in skipped],
      'images': rows}
  if summary['labelled']:
    summary['accuracy'] = float(np.mean(probs_NC.argmax(axis=-1) == decoded.labels_N))
  workdir_lib.write_json(os.path.join(out_dir, 'explain.json'), summary)
  workdir_lib.finish_unit(out_dir, [*names, 'gallery.png', 'explain.json'])
  logging.info('explained %d images of %s with Grad-CAM of %s → %s', len(rows), folder, config.explain.layer,
               out_dir)
  return summary
