"""Does the model look at the lungs? Scores with the lung region hidden or shown alone, and Grad-CAM's share in it.

--mode=shortcuts restores a run's checkpoint and predicts config.eval.dir three times: as is, with the lungs hidden
(filled with each image's mean colour) and with everything but the lungs hidden. The lungs are each film's own
mask from the shipped lung U-Net (config.shortcuts.region='mask', the default: lungjax/lungs.py on the image the
classifier sees) or, as a documented fallback, the fixed LUNG_BOX (region='box'); a film whose predicted mask
covers less than MIN_MASK_SHARE of it gets the box, counted in the report. A model that keeps its score
with the lungs hidden reads something else (laterality markers, text, the body's size and shape, the film's
border: DeGrave, Janizek and Lee, Nature Machine Intelligence 2021). Grad-CAM of the predicted class adds where
the heat lies: its share inside the lungs, against the lungs' share of the image (the share of an even spread).
Writes workdir/shortcuts/<folder name>/shortcuts.json, shortcuts.md and shortcuts.png (the lungs outlined).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import matplotlib
import ml_collections
import numpy as np
from absl import logging

from lungjax import checkpoints, config_check, evaluate, inference, metrics as metrics_lib
from lungjax.explain import gallery as explain
from lungjax.runtime import mesh as mesh_lib, workdir as workdir_lib
from lungjax.data import folders, loading

matplotlib.use('Agg')
import matplotlib.patches  # pylint: disable=g-import-not-at-top
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

# The lung region of a posteroanterior chest film framed on the chest, as fractions of the resized (square) image:
# rows 10%-85% (apices to the costophrenic angles), columns 10%-90% (both lung fields and the heart between them).
# Checked by eye on the Kaggle study set (paediatric and adult films) and the COVID-19 Radiography sample: it holds
# the lung fields of nearly every film and leaves out the corners and edges, where laterality markers, hospital
# text, the neck, shoulders and abdomen lie. It is generous on purpose: hiding it must hide the lungs whole, or
# their edges could keep a model's score and make it look like a shortcut. Top and bottom rows are exclusive.
LUNG_BOX = {'top': 0.10, 'bottom': 0.85, 'left': 0.10, 'right': 0.90}
REGIONS = config_check.SHORTCUTS_REGIONS  # config.shortcuts.region (config_check owns it: no import cycle).
MIN_MASK_SHARE = 0.02  # A predicted lung mask below this share of the film is taken as a failure: the box instead.
VIEWS = ('as_is', 'lungs_hidden', 'lungs_only')
VIEW_TITLES = {'as_is': 'as is', 'lungs_hidden': 'lungs hidden', 'lungs_only': 'lungs only'}
# The rule of the verdict. "Keeps its score": accuracy with the lungs hidden at most KEEPS_SCORE_DROP below the
# accuracy as is. "Above chance": the 95% Wilson interval's lower end above the chance accuracy, the share of the
# folder's commonest class (what always answering that class scores).
KEEPS_SCORE_DROP = 0.10
EXAMPLES_PER_CLASS = 3  # Images per class in shortcuts.png, spread evenly over the class's files.
FILES = ('shortcuts.json', 'shortcuts.md', 'shortcuts.png')
_TOOL = 'lungjax.shortcuts'  # Recorded in shortcuts.json: a folder whose shortcuts.json lacks it is not overwritten.
_PNG_METADATA = {'Software': None}


def box_pixels(height: int, width: int, box: dict[str, float] | None = None) -> tuple[int, int, int, int]:
  """Returns (top, bottom, left, right) pixel bounds of `box` (default LUNG_BOX) in an image; bottom/right exclusive."""
  box = box or LUNG_BOX
  if not (0.0 <= box['top'] < box['bottom'] <= 1.0 and 0.0 <= box['left'] < box['right'] <= 1.0):
    raise ValueError(f'lung box {box} must hold 0 <= top < bottom <= 1 and 0 <= left < right <= 1')
  bounds = (round(box['top'] * height), round(box['bottom'] * height),
            round(box['left'] * width), round(box['right'] * width))
  if bounds[0] >= bounds[1] or bounds[2] >= bounds[3]:
    raise ValueError(f'lung box {box} covers no pixel of a {height}x{width} image')
  return bounds


def box_mask(height: int, width: int, box: dict[str, float] | None = None) -> np.ndarray:
  """A height x width boolean mask, True inside the box."""
  top, bottom, left, right = box_pixels(height, width, box)
  mask_HW = np.zeros((height, width), bool)
  mask_HW[top:bottom, left:right] = True
  return mask_HW


def lung_regions(images_NHWC: np.ndarray, region: str, lung_model: Any = None,
                 box: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Bool regions_NHW (True inside the lungs) of each image and fallback_N (True where the box stands in).

  region 'box': the box for every image. 'mask': the lung U-Net's mask of each image (lung_model, default the
  shipped lungs.load_lungs()); an image whose mask covers less than MIN_MASK_SHARE of it gets the box."""
  images_NHWC = np.asarray(images_NHWC)
  n, height, width = images_NHWC.shape[:3]
  box_HW = box_mask(height, width, box)
  if region == 'box':
    return np.broadcast_to(box_HW, (n, height, width)).copy(), np.ones(n, bool)
  if region != 'mask':
    raise ValueError(f'config.shortcuts.region={region!r} is not one of {REGIONS}')
  from lungjax import lungs as lungs_lib  # pylint: disable=g-import-not-at-top
  model = lung_model or lungs_lib.load_lungs()
  regions = np.stack([np.asarray(m, bool) for m in model.masks(list(images_NHWC))]) if n else np.zeros(
      (0, height, width), bool)
  fallback_N = regions.mean(axis=(1, 2)) < MIN_MASK_SHARE if n else np.zeros(0, bool)
  regions[fallback_N] = box_HW
  return regions, fallback_N


def mask_images(images_NHWC: np.ndarray, view: str, box: dict[str, float] | None = None,
                regions_NHW: np.ndarray | None = None) -> np.ndarray:
  """Returns a copy of the images seen as `view`: 'as_is' unchanged, 'lungs_hidden' with the lungs filled,
  'lungs_only' with everything outside the lungs filled. The lungs: regions_NHW (each image's own, e.g.
  lung_regions) or else the box. The fill is each image's own mean per channel (over the whole image, before
  hiding), rounded to the images' dtype."""
  if view not in VIEWS:
    raise ValueError(f'view {view!r} is not one of {VIEWS}')
  images_NHWC = np.asarray(images_NHWC)
  if view == 'as_is':
    return images_NHWC.copy()
  if regions_NHW is None:
    inside_NHW = box_mask(images_NHWC.shape[1], images_NHWC.shape[2], box)[None]
  else:
    inside_NHW = np.asarray(regions_NHW, bool)
    if inside_NHW.shape != images_NHWC.shape[:3]:
      raise ValueError(f'lung regions of shape {inside_NHW.shape} for images of shape {images_NHWC.shape}')
  hidden_NHW = inside_NHW if view == 'lungs_hidden' else ~inside_NHW
  means_N11C = images_NHWC.mean(axis=(1, 2), keepdims=True, dtype=np.float64)
  if np.issubdtype(images_NHWC.dtype, np.integer):
    means_N11C = np.rint(means_N11C)
  return np.where(hidden_NHW[..., None], means_N11C.astype(images_NHWC.dtype), images_NHWC)


def heat_share_in_box(heatmaps_NHW: np.ndarray, box: dict[str, float] | None = None,
                      regions_NHW: np.ndarray | None = None) -> np.ndarray:
  """Per image, the share of the heatmap's total inside the lungs (regions_NHW, else the box); NaN for a map that
  is zero everywhere."""
  heatmaps_NHW = np.asarray(heatmaps_NHW, np.float64)
  inside = (box_mask(heatmaps_NHW.shape[1], heatmaps_NHW.shape[2], box)[None] if regions_NHW is None
            else np.asarray(regions_NHW, bool))
  total_N = heatmaps_NHW.sum(axis=(1, 2))
  inside_N = (heatmaps_NHW * inside).sum(axis=(1, 2))
  return np.where(total_N > 0, inside_N / np.where(total_N > 0, total_N, 1.0), np.nan)


def view_scores(labels_N: np.ndarray, predictions_N: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
  """Accuracy and the recall of each class present, each with its 95% Wilson interval and counts."""
  labels_N, predictions_N = np.asarray(labels_N), np.asarray(predictions_N)
  correct_N = labels_N == predictions_N
  recall, recall_interval, support = {}, {}, {}
  for c, name in enumerate(classes):
    n = int(np.sum(labels_N == c))
    if n:
      hits = int(np.sum(correct_N[labels_N == c]))
      recall[name], recall_interval[name], support[name] = hits / n, list(metrics_lib.wilson_interval(hits, n)), n
  hits, n = int(correct_N.sum()), len(labels_N)
  return {'accuracy': hits / n if n else 0.0, 'accuracy_interval': list(metrics_lib.wilson_interval(hits, n)),
          'recall': recall, 'recall_interval': recall_interval, 'support': support,
          'predicted': {name: int(np.sum(predictions_N == c)) for c, name in enumerate(classes)}}


def mean_interval(values_N: np.ndarray, n_bootstrap: int, seed: int) -> list[float]:
  """95% percentile bootstrap interval of a mean (the values resampled with replacement); [v, v] for one value."""
  values_N = np.asarray(values_N, np.float64)
  if not len(values_N):
    raise ValueError('mean_interval needs at least one value')
  if len(values_N) == 1 or n_bootstrap < 1:
    return [float(values_N.mean())] * 2
  indices_BN = np.random.default_rng(seed).integers(0, len(values_N), (n_bootstrap, len(values_N)))
  means_B = values_N[indices_BN].mean(axis=1)
  return [float(np.quantile(means_B, 0.025)), float(np.quantile(means_B, 0.975))]


def cam_shares(labels_N: np.ndarray, shares_N: np.ndarray, classes: Sequence[str], n_bootstrap: int,
               seed: int) -> dict[str, Any]:
  """Mean Grad-CAM share in the box per true class (and over all images), with bootstrap intervals and counts.

  Images whose map is zero everywhere (NaN share: no evidence for the predicted class at the layer) are left out
  and counted per class under 'zero_maps'."""
  means, intervals, counts, zero_maps = {}, {}, {}, {}
  for c, name in enumerate(classes):
    of_class = labels_N == c
    if not of_class.any():
      continue
    values = shares_N[of_class & ~np.isnan(shares_N)]
    zero_maps[name] = int(np.sum(of_class)) - len(values)
    counts[name] = len(values)
    if len(values):
      means[name], intervals[name] = float(values.mean()), mean_interval(values, n_bootstrap, seed + c)
  defined = shares_N[~np.isnan(shares_N)]
  overall = {'mean': float(defined.mean()) if len(defined) else None,
             'interval': mean_interval(defined, n_bootstrap, seed) if len(defined) else None, 'n': len(defined)}
  return {'means': means, 'intervals': intervals, 'n': counts, 'zero_maps': zero_maps, 'overall': overall}


def verdict(views: dict[str, dict[str, Any]], chance: float) -> dict[str, str]:
  """The plain-words reading of the three views' accuracies (see KEEPS_SCORE_DROP): a code and a sentence each
  for hiding the lungs and for showing them alone."""
  as_is, hidden, only = (views[v] for v in VIEWS)

  def above_chance(view: dict[str, Any]) -> bool:
    return view['accuracy_interval'][0] > chance

  def numbers(view: dict[str, Any], name: str) -> str:
    low, high = view['accuracy_interval']
    return f'{name} {view["accuracy"]:.3f} [{low:.3f}, {high:.3f}]'

  against = (f'({numbers(hidden, "accuracy with the lungs hidden")} against {numbers(as_is, "as is")}; chance '
             f'{chance:.3f})')
  if not above_chance(as_is):
    code = 'inconclusive'
    text = (f'The model scores no better than chance on these images as is {against}: this check cannot tell what '
            'it uses.')
  elif as_is['accuracy'] - hidden['accuracy'] <= KEEPS_SCORE_DROP and above_chance(hidden):
    code = 'uses_something_else'
    text = f'The model keeps its score without the lungs: it uses something else {against}.'
  elif above_chance(hidden):
    code = 'partly_outside'
    text = (f'Without the lungs the model loses part of its score but stays above chance: part of what it uses '
            f'lies outside the lungs {against}.')
  else:
    code = 'needs_the_lungs'
    text = (f'Without the lungs the model falls to chance: it needs what lies inside the lungs {against}. This '
            'does not show that it reads the disease: a shortcut inside the lungs would pass too.')
  only_numbers = f'({numbers(only, "accuracy with only the lungs")} against {numbers(as_is, "as is")})'
  if not above_chance(only):
    only_code, only_text = 'chance', f'With only the lungs shown the model falls to chance {only_numbers}.'
  elif as_is['accuracy'] - only['accuracy'] <= KEEPS_SCORE_DROP:
    only_code, only_text = 'keeps_score', f'With only the lungs shown the model keeps its score {only_numbers}.'
  else:
    only_code = 'loses_part'
    only_text = f'With only the lungs shown the model loses part of its score but stays above chance {only_numbers}.'
  return {'lungs_hidden': code, 'lungs_hidden_text': text, 'lungs_only': only_code, 'lungs_only_text': only_text}


def cam_verdicts(cam: dict[str, Any], area_share: float) -> dict[str, str]:
  """Per class, 'looks outside the lungs' where the mean heat share in the box is below the box's share of the
  image (an even spread), else 'looks inside the lungs'; the sentence says whether the interval clears it."""
  out = {}
  for name, mean in cam['means'].items():
    low, high = cam['intervals'][name]
    numbers = (f'{mean:.3f} [{low:.3f}, {high:.3f}] of its heat inside the lung region, which covers '
               f'{area_share:.3f} of the image')
    if mean < area_share:
      sure = 'its interval lies wholly below' if high < area_share else 'its interval reaches the region\'s share'
      out[name] = f'{name}: looks outside the lungs ({numbers}; {sure}).'
    else:
      sure = 'its interval lies wholly above' if low > area_share else 'its interval reaches the region\'s share'
      out[name] = f'{name}: looks inside the lungs ({numbers}; {sure}).'
  return out


def _format(value: float, interval: Sequence[float]) -> str:
  return f'{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]'


def recall_changes(views: dict[str, dict[str, Any]]) -> list[str]:
  """One line per class present: its recall as is, with the lungs hidden and with only the lungs, and the changes."""
  lines = []
  for name in views['as_is']['recall']:
    parts = [f'{name} recall {_format(views["as_is"]["recall"][name], views["as_is"]["recall_interval"][name])} '
             'as is']
    for view in VIEWS[1:]:
      value = views[view]['recall'][name]
      parts.append(f'{_format(value, views[view]["recall_interval"][name])} with {VIEW_TITLES[view]} '
                   f'({value - views["as_is"]["recall"][name]:+.3f})')
    lines.append(', '.join(parts) + '.')
  return lines


def shortcuts_markdown(summary: dict[str, Any], title: str) -> str:
  """The report: verdict in plain words, the views' scores with intervals, Grad-CAM shares, the rule, the figure."""
  views = summary['views']
  classes = list(views['as_is']['recall'])
  counts = ', '.join(f'{name} {n}' for name, n in views['as_is']['support'].items())
  lines = [
      f'# Does the model look at the lungs? {title}', '',
      f'Checkpoint step {summary["checkpoint_step"]}; {summary["n_images"]} images ({counts}) of '
      f'`{summary["folder"]}` at {summary["image_size"]} px.',
      region_line(summary) + ' A hidden part is filled with the image\'s mean colour. Every interval is 95%: '
      'Wilson for accuracies and recalls, a bootstrap over images for heat shares.', '',
      '## Verdict', '',
      f'- **{summary["verdict"]["lungs_hidden_text"]}**',
      f'- {summary["verdict"]["lungs_only_text"]}',
  ]
  lines += [f'- Grad-CAM, {text}' for text in summary['cam_verdicts'].values()]
  lines += [f'- {line}' for line in recall_changes(views)]
  if summary['absent_classes']:
    lines.append(f'- No images of {", ".join(summary["absent_classes"])} in this folder: no recall for it.')
  lines += ['', '## Accuracy and recall per view', '',
            '| view | accuracy | ' + ' | '.join(f'{name} recall' for name in classes) + ' | predicted |',
            '|---|---|' + '---|' * len(classes) + '---|']
  for view in VIEWS:
    scores = views[view]
    recalls = ' | '.join(_format(scores['recall'][name], scores['recall_interval'][name]) for name in classes)
    predicted = ', '.join(f'{name} {n}' for name, n in scores['predicted'].items())
    lines.append(f'| {VIEW_TITLES[view]} | {_format(scores["accuracy"], scores["accuracy_interval"])} | {recalls} | '
                 f'{predicted} |')
  cam = summary['cam']
  lines += ['', f'## Grad-CAM heat inside the lungs (layer {summary["layer"]}, map of the predicted class)', '',
            f'An even spread puts {summary["region_area_share"]:.3f} of the heat in the lung region (its mean share '
            'of the images).', '',
            '| true class | images | share of heat in the lungs | zero maps (left out) |', '|---|---|---|---|']
  for name in cam['n']:
    share = _format(cam['means'][name], cam['intervals'][name]) if name in cam['means'] else 'n/a'
    lines.append(f'| {name} | {cam["n"][name]} | {share} | {cam["zero_maps"][name]} |')
  overall = cam['overall']
  if overall['mean'] is not None:
    lines.append(f'| all | {overall["n"]} | {_format(overall["mean"], overall["interval"])} | '
                 f'{sum(cam["zero_maps"].values())} |')
  lines += [
      '', '## How to read this', '',
      f'- Chance accuracy is {summary["chance_accuracy"]:.3f}: the share of the commonest class, what always '
      'answering it scores. "Above chance" means the interval\'s lower end lies above it.',
      f'- "Keeps its score without the lungs": accuracy with the lungs hidden at most {KEEPS_SCORE_DROP:.2f} below '
      'the accuracy as is, and above chance. Then the score comes from outside the lungs: markers, text, body size '
      'and shape, the film\'s borders.',
      '- "Looks outside the lungs": the mean share of a class\'s Grad-CAM heat inside the lungs is below the lung '
      'region\'s mean share of the image.',
      '- A flat fill is unlike any training image: part of a drop can be the model\'s reaction to the fill itself. '
      'A class whose recall rises with the lungs hidden is where the model\'s answers fall by default.',
      ('- The lung masks come from the lung U-Net trained on adult films (results/lungs/): on children\'s films '
       'they are less sure; passing this check does not show that the model reads the disease.'
       if summary['region'] == 'mask' else
       '- The box is one rectangle for every film: it cuts badly framed films, and passing this check does not '
       'show that the model reads the disease.'),
  ]
  if summary['skipped_images']:
    lines += ['', f'## Skipped files ({len(summary["skipped_images"])})', '']
    lines += [f'- `{path}`: {reason}' for path, reason in summary['skipped_images']]
  lines += ['', '## Examples', '',
            f'Each row one true class, {EXAMPLES_PER_CLASS} images each seen as is, with the lungs hidden and with '
            'only the lungs; Grad-CAM of the predicted class over it, the lungs outlined (dashed); green titles are '
            'right.', '',
            '![examples](shortcuts.png)', '']
  return '\n'.join(lines)


def example_indices(labels_N: np.ndarray, num_classes: int, per_class: int = EXAMPLES_PER_CLASS) -> list[int]:
  """Up to per_class images of each class present, spread evenly over its images in folder order."""
  chosen = []
  for c in range(num_classes):
    of_class = np.flatnonzero(labels_N == c)
    if len(of_class):
      picks = np.unique(np.linspace(0, len(of_class) - 1, min(per_class, len(of_class))).round().astype(int))
      chosen.extend(int(i) for i in of_class[picks])
  return chosen


def region_line(summary: dict[str, Any]) -> str:
  """The report's sentence on where 'the lungs' are (the lung U-Net's masks or the box)."""
  box = summary['box']
  box_text = (f'rows {box["top"]:.0%} to {box["bottom"]:.0%}, columns {box["left"]:.0%} to {box["right"]:.0%} of '
              'the resized image')
  if summary['region'] == 'box':
    return f'Lung region: the fixed box, {box_text} ({summary["region_area_share"]:.1%} of its area).'
  return (f'Lung region: each film\'s own mask from the lung U-Net (lungjax/lungs.py, weights '
          f'{summary["lung_weights"].get("sha256") or "given"!s:.12}), {summary["region_area_share"]:.1%} of the '
          f'image on average; {summary["box_fallback"]} of {summary["n_images"]} films whose mask covered under '
          f'{MIN_MASK_SHARE:.0%} got the box ({box_text}) instead.')


def plot_examples(tiles: Sequence[dict[str, Any]], rows: int, columns: int, box_bounds: tuple[int, int, int, int],
                  path: str, title: str) -> None:
  """Draws the tiles ({'pixels', 'heatmap', 'title', 'colour', 'row', 'column', optional 'region': a bool H x W
  lung mask}) in a grid, the lungs outlined dashed (the box where a tile has no region)."""
  fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.2 * rows + 0.4), squeeze=False,
                           layout='constrained')
  for ax in axes.flat:
    ax.axis('off')
  top, bottom, left, right = box_bounds
  for tile in tiles:
    ax = axes[tile['row'], tile['column']]
    ax.imshow(explain.overlay(tile['pixels'], tile['heatmap']), interpolation='nearest')
    if tile.get('region') is not None:
      ax.contour(np.asarray(tile['region'], np.float32), levels=[0.5], colors='white', linestyles='--',
                 linewidths=0.8)
    else:
      ax.add_patch(matplotlib.patches.Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                                                edgecolor='white', linestyle='--', linewidth=0.8))
    ax.set_title(tile['title'], fontsize=7, color=tile['colour'])
  fig.suptitle(title, fontsize=9)
  workdir_lib.write_figure(path, fig, dpi=100, metadata=_PNG_METADATA)
  plt.close(fig)


def _weights_record() -> dict[str, Any]:
  from lungjax import lungs as lungs_lib  # pylint: disable=g-import-not-at-top
  return lungs_lib.weights_record()


def _check_out_dir(out_dir: str) -> None:
  """Refuses a folder holding any of FILES unless its shortcuts.json was written by this module."""
  present = [name for name in FILES if os.path.exists(os.path.join(out_dir, name))]
  if not present:
    return
  ours = False
  try:
    with open(os.path.join(out_dir, 'shortcuts.json')) as f:
      ours = json.load(f).get('tool') == _TOOL
  except (OSError, ValueError, AttributeError):
    pass
  if not ours:
    raise FileExistsError(f'{out_dir!r} holds {present} that --mode=shortcuts did not write: move them away first')


def _load(config: ml_collections.ConfigDict) -> tuple[str, loading.FolderImages, loading.TrainingData | None]:
  """The folder's name, its decoded images (config.eval.dir; '@validation': the run's validation split) and, for
  '@validation', the training data it was split from."""
  folder = config.eval.dir
  if folder == evaluate.VALIDATION:
    data = loading.load_training_data(config)
    return 'validation', loading.FolderImages(data.train_folder.folder, data.val, ()), data
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'config.eval.dir={folder!r} is not a folder')
  folder_names = folders.parse_folder_names(config.eval.class_names, config.data.classes)
  loaded = loading.load_folder(folder, config, require_all_classes=False, folder_names=folder_names)
  return workdir_lib.folder_identity([folder]), loaded, None  # Same base name, other folder: its own output.


region_of = config_check.shortcuts_region  # config.shortcuts.region (an old config.json's: upgraded).


def check_shortcuts(config: ml_collections.ConfigDict, workdir: str,
                    overridden: Sequence[str] | None = None, lung_model: Any = None) -> dict[str, Any]:
  """Restores workdir's best (or config.eval.step) checkpoint and checks whether it needs the lungs of
  config.eval.dir (class sub-folders, config.eval.class_names maps other names; '@validation' the run's split).

  The model, classes and image size come from the run's config.json (checkpoints.run_config_for_inference: an
  `overridden` field outside INFERENCE_FIELDS that differs is a ValueError). The lungs: config.shortcuts.region
  (lung_regions; lung_model default the shipped U-Net). Writes shortcuts.json, shortcuts.md and shortcuts.png to
  workdir/shortcuts/<folder name>-<hash of its path>/ and returns the summary (with 'out_dir').
  """
  config = checkpoints.run_config_for_inference(workdir, config, overridden)
  if not config.eval.dir:
    raise ValueError('--mode=shortcuts needs a folder of class sub-folders: pass --config.eval.dir=FOLDER')
  name, loaded, split_from = _load(config)
  out_dir = os.path.join(workdir, 'shortcuts', name)
  _check_out_dir(out_dir)
  decoded = loaded.decoded
  if not len(decoded):
    raise ValueError(f'config.eval.dir={config.eval.dir!r}: no decodable images to check')
  classes = tuple(config.data.classes)
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size(config.eval.batch_size, mesh, 'config.eval.batch_size')
  model = inference.load(workdir, config=config, mesh=mesh)
  if split_from is not None:  # '@validation' of another root: refused (issue 26 High 4).
    evaluate.check_validation_split(split_from, model, workdir)
  step = model.checkpoint_step

  labels_N = decoded.labels_N
  region = region_of(config)
  regions_NHW, fallback_N = lung_regions(decoded.images_NHWC, region, lung_model)
  viewed = {view: mask_images(decoded.images_NHWC, view, regions_NHW=regions_NHW) for view in VIEWS}
  probabilities = {view: model.probabilities(x, desc='evaluating', batch_size=config.eval.batch_size)
                   for view, x in viewed.items()}
  views = {view: view_scores(labels_N, probs_NC.argmax(axis=-1), classes) for view, probs_NC in probabilities.items()}

  heatmaps_NHW = model.heatmaps(viewed['as_is'], np.full(len(decoded), -1, np.int32))
  shares_N = heat_share_in_box(heatmaps_NHW, regions_NHW=regions_NHW)
  cam = cam_shares(labels_N, shares_N, classes, config.eval.n_bootstrap, config.seed)
  height, width = decoded.images_NHWC.shape[1:3]
  region_shares_N = regions_NHW.mean(axis=(1, 2))
  area_share = float(region_shares_N.mean())
  chance = float(np.bincount(labels_N, minlength=len(classes)).max() / len(labels_N))

  summary: dict[str, Any] = {
      'tool': _TOOL, 'folder': os.path.abspath(loaded.folder), 'out_dir': os.path.abspath(out_dir),
      'checkpoint_step': step, 'n_images': len(decoded), 'image_size': int(height), 'classes': list(classes),
      'absent_classes': [c for c in classes if c not in views['as_is']['recall']],
      'box': dict(LUNG_BOX), 'box_pixels': dict(zip(('top', 'bottom', 'left', 'right'), box_pixels(height, width))),
      'box_area_share': float(box_mask(height, width).mean()), 'region': region, 'region_area_share': area_share,
      'box_fallback': int(fallback_N.sum()) if region == 'mask' else None,
      'lung_weights': None if region != 'mask' else (_weights_record() if lung_model is None else {
          'file': 'the lung_model given', 'sha256': None, **dict(getattr(lung_model, 'meta', None) or {})}),
      'chance_accuracy': chance, 'keeps_score_drop': KEEPS_SCORE_DROP,
      'views': views, 'layer': config.explain.layer,
      'cam_share_in_lungs': cam['means'], 'cam_share_in_lungs_interval': cam['intervals'], 'cam': cam,
      'verdict': verdict(views, chance), 'cam_verdicts': cam_verdicts(cam, area_share),
      'skipped_images': [list(item) for item in loaded.skipped_report()],
      'images': [{'file': path, 'true': classes[label],
                  **{view: classes[int(probabilities[view][i].argmax())] for view in VIEWS},
                  'cam_share_in_lungs': None if np.isnan(shares_N[i]) else float(shares_N[i]),
                  'lung_share': float(region_shares_N[i]), 'box_fallback': bool(region == 'mask' and fallback_N[i])}
                 for i, (path, label) in enumerate(zip(decoded.paths, labels_N))],
  }

  chosen = example_indices(labels_N, len(classes))
  stacked_NHWC = np.concatenate([viewed[view][chosen] for view in VIEWS])
  example_probs_NC, example_maps_NHW = model.explain_pixels(stacked_NHWC, np.full(len(stacked_NHWC), -1, np.int32))
  present = [c for c in range(len(classes)) if np.any(labels_N == c)]
  tiles = []
  for k, index in enumerate(chosen):
    label = int(labels_N[index])
    slot = sum(1 for j in chosen[:k] if labels_N[j] == label)
    for v, view in enumerate(VIEWS):
      row_in_stack = v * len(chosen) + k
      predicted = int(example_probs_NC[row_in_stack].argmax())
      caption = f'{classes[label]} · {VIEW_TITLES[view]}' if v == 0 else VIEW_TITLES[view]
      tiles.append({'pixels': stacked_NHWC[row_in_stack], 'heatmap': example_maps_NHW[row_in_stack],
                    'region': regions_NHW[index],
                    'title': f'{caption}\npred {classes[predicted]} {example_probs_NC[row_in_stack, predicted]:.0%}',
                    'colour': 'tab:green' if predicted == label else 'tab:red',
                    'row': present.index(label), 'column': slot * len(VIEWS) + v})
  workdir_lib.begin_unit(out_dir)  # One unit: its marker is written last (issue 26 High 3).
  title = f'{config.name} on ' + ('validation' if name == 'validation' else
                                  workdir_lib.legacy_folder_name([config.eval.dir]))
  plot_examples(tiles, len(present), EXAMPLES_PER_CLASS * len(VIEWS), box_pixels(height, width),
                os.path.join(out_dir, 'shortcuts.png'),
                f'{title}, checkpoint step {step}: as is, lungs hidden, lungs only (Grad-CAM of the predicted class)')
  workdir_lib.write_json(os.path.join(out_dir, 'shortcuts.json'), summary)
  workdir_lib.write_text(os.path.join(out_dir, 'shortcuts.md'), shortcuts_markdown(summary, title))
  workdir_lib.finish_unit(out_dir, FILES)
  logging.info('%s: as is %.3f, lungs hidden %.3f, lungs only %.3f (%s) → %s', title, views['as_is']['accuracy'],
               views['lungs_hidden']['accuracy'], views['lungs_only']['accuracy'],
               summary['verdict']['lungs_hidden'], out_dir)
  return summary
