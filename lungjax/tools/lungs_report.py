"""The lung U-Net's report (issue 24 part 1): Dice / IoU on the held-out masks, per view, the worst films, and
contact sheets of predicted masks on every shared source.

  python -m lungjax.tools.lungs_report --workdir=W --out=results/lungs [--weights=NPZ] [--data=../shared/data]

- W is the training run (`python -m lungjax.main --config=configs/lungs.py --mode=train --workdir=W`): its
  split.json names the test films (patients never trained on nor used to choose anything).
- --weights (default: the shipped float16 lungjax/models/weights/lungs_unet.npz) makes the masks, exactly as
  lungjax.segment does: at each film's own size. The same run's best checkpoint in float32 (restored from W) is
  compared with it: Dice between the float16 and the float32 masks of every test film.
- Dice and IoU per test film against its human-reviewed mask at the film's size; mean with a 95% percentile
  bootstrap interval over films (config-free: BOOTSTRAP resamples, seed 0); per view (PA / AP / AP Supine).
- worst5.png: the 5 test films of lowest Dice, the truth outlined green and the prediction red.
- sheet_<source>.png: 24 films of each shared source (spread evenly over its sorted files), the predicted mask
  outlined; with each sheet, the mask statistics that need no truth (mask share of the film, films with no mask,
  films whose mask is not two large parts).
Writes report.json and report.md beside them through lungjax.runtime.workdir (atomic; never over a file it did not write).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from lungjax import lungs as lungs_lib  # pylint: disable=g-import-not-at-top
from lungjax.runtime import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

BOOTSTRAP = 2000
SHEET_FILMS = 24
VIEWS = ('PA', 'AP', 'AP Supine')
# The shared sources and the folders a sheet draws from (relative to --data); 'children' marks the Kaggle Normal and
# Viral Pneumonia films (the paediatric set of Kermany et al.: no lung masks exist for them).
SOURCES = (
    ('kaggle_covid', 'covid19-image-dataset/train/Covid', 'Kaggle train, Covid (adults)'),
    ('kaggle_normal', 'covid19-image-dataset/train/Normal', 'Kaggle train, Normal (children)'),
    ('kaggle_viral', 'covid19-image-dataset/train/Viral Pneumonia', 'Kaggle train, Viral Pneumonia (children)'),
    ('radiography_covid', 'covid19-radiography-sample/COVID', 'COVID-19 Radiography sample, COVID (adults)'),
    ('radiography_normal', 'covid19-radiography-sample/Normal', 'COVID-19 Radiography sample, Normal (adults)'),
    ('cohen_covid', 'cohen-covid-chestxray/images/COVID-19', 'cohen, COVID-19 (adults)'),
    ('cohen_no_finding', 'cohen-covid-chestxray/images/No Finding', 'cohen, No Finding (no masks)'),
)


def bootstrap_mean(values_N: np.ndarray, n_bootstrap: int = BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
  """Mean and 95% percentile bootstrap interval (films resampled with replacement) of per-film values."""
  values_N = np.asarray(values_N, np.float64)
  if not len(values_N):
    return {'mean': None, 'interval': None, 'n': 0}
  means_B = values_N[np.random.default_rng(seed).integers(0, len(values_N), (n_bootstrap, len(values_N)))].mean(1)
  return {'mean': float(values_N.mean()), 'interval': [float(np.quantile(means_B, 0.025)),
                                                       float(np.quantile(means_B, 0.975))], 'n': int(len(values_N))}


def mask_parts(mask_HW: np.ndarray, min_share: float = 0.01) -> int:
  """How many connected parts (8-connected) of the mask cover at least min_share of the film each."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  labelled, count = ndimage.label(np.asarray(mask_HW, bool), structure=np.ones((3, 3)))
  if not count:
    return 0
  sizes = np.bincount(labelled.ravel())[1:]
  return int(np.sum(sizes >= min_share * mask_HW.size))


def outline(ax: Any, mask_HW: np.ndarray, colour: str, width: float = 1.0) -> None:
  """Draws the outline of a bool mask on ax (nothing for an empty mask)."""
  if np.asarray(mask_HW).any():
    ax.contour(np.asarray(mask_HW, np.float32), levels=[0.5], colors=colour, linewidths=width)


def _show(ax: Any, pixels_HWC: np.ndarray) -> None:
  ax.imshow(lungs_lib.film_grey(pixels_HWC), cmap='gray', vmin=0, vmax=255, interpolation='bilinear')
  ax.axis('off')


def test_films(workdir: str) -> tuple[str, list[dict[str, str]]]:
  """The metadata table's folder and the rows of split.json's test films (in split order)."""
  split = workdir_lib.read_json(os.path.join(workdir, 'split.json'))
  with open(split['metadata'], newline='') as f:
    rows = {row['file']: row for row in csv.DictReader(f)}
  return os.path.dirname(split['metadata']), [rows[name] for name in split['test']]


def float32_model(workdir: str) -> lungs_lib.LungModel:
  """The run's best checkpoint at full float32 precision (what the float16 file was exported from)."""
  from lungjax import segmentation  # pylint: disable=g-import-not-at-top
  params, config, step = segmentation.restore_params(workdir)
  return lungs_lib.model_from(params, config.model.features, config.model.downsample, config.data.image_size,
                              {'step': step, 'dtype': 'float32'})


def evaluate_test(workdir: str, model: lungs_lib.LungModel, reference: lungs_lib.LungModel | None
                  ) -> tuple[list[dict[str, Any]], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
  """Per test film: Dice, IoU, view, mask shares (and Dice float16 vs float32); and (film, truth, predicted)."""
  from lungjax import segmentation  # pylint: disable=g-import-not-at-top
  root, rows = test_films(workdir)
  out, pictures = [], []
  for row in rows:
    pixels_HWC, truth_HW = segmentation.load_film_and_mask(root, row)
    predicted_HW = model.masks([pixels_HWC])[0]
    record = {'file': row['file'], 'view': row['view'], 'patientid': row['patientid'],
              'dice': lungs_lib.dice(predicted_HW, truth_HW), 'iou': lungs_lib.iou(predicted_HW, truth_HW),
              'height': int(truth_HW.shape[0]), 'width': int(truth_HW.shape[1])}
    if reference is not None:
      reference_HW = reference.masks([pixels_HWC])[0]
      record['dice_float16_vs_float32'] = lungs_lib.dice(predicted_HW, reference_HW)
      record['dice_float32'] = lungs_lib.dice(reference_HW, truth_HW)
    out.append(record)
    pictures.append((pixels_HWC, truth_HW, predicted_HW))
  return out, pictures


def worst_figure(records: Sequence[dict[str, Any]], pictures: Sequence[Any], path: str, count: int = 5) -> list[str]:
  """The `count` test films of lowest Dice: truth green, prediction red. Returns their files."""
  order = np.argsort([r['dice'] for r in records])[:count]
  fig, axes = plt.subplots(1, len(order), figsize=(3.2 * len(order), 3.9), squeeze=False, layout='constrained')
  for ax, i in zip(axes[0], order):
    pixels_HWC, truth_HW, predicted_HW = pictures[i]
    _show(ax, pixels_HWC)
    outline(ax, truth_HW, 'lime', 1.2)
    outline(ax, predicted_HW, 'red', 1.2)
    ax.set_title(f'{os.path.basename(records[i]["file"])[:28]}\n{records[i]["view"]}: Dice {records[i]["dice"]:.3f}',
                 fontsize=8)
  fig.suptitle('The 5 held-out films of lowest Dice: human mask green, U-Net red', fontsize=10)
  workdir_lib.write_figure(path, fig, dpi=90, metadata={'Software': None})
  plt.close(fig)
  return [records[i]['file'] for i in order]


def dice_figure(records: Sequence[dict[str, Any]], test: dict[str, Any], path: str) -> None:
  """Per-film test Dice by view (dots) with each group's mean and 95% bootstrap interval (bars)."""
  groups = [('all', test['dice'], [r['dice'] for r in records])] + [
      (view, test['per_view'][view]['dice'], [r['dice'] for r in records if r['view'] == view]) for view in VIEWS]
  fig, ax = plt.subplots(figsize=(6.0, 3.4), layout='constrained')
  jitter = np.random.default_rng(0)
  for x, (name, summary, values) in enumerate(groups):
    if not values:
      continue
    ax.scatter(x + jitter.uniform(-0.18, 0.18, len(values)), values, s=9, alpha=0.5, color='tab:blue')
    low, high = summary['interval']
    ax.errorbar([x], [summary['mean']], yerr=[[summary['mean'] - low], [high - summary['mean']]], fmt='o',
                color='black', capsize=6, markersize=5)
    ax.annotate(f'{summary["mean"]:.3f}\n[{low:.3f}, {high:.3f}]', (x + 0.22, summary['mean']), fontsize=7,
                va='center')
  ax.axhline(0.90, color='tab:red', linestyle=':', linewidth=1, label='target 0.90')
  ax.set_xticks(range(len(groups)), [f'{name}\n(n={len(values)})' for name, _, values in groups])
  ax.set_ylabel('Dice against the human mask')
  ax.set_ylim(max(0.0, min(r['dice'] for r in records) - 0.05), 1.0)
  ax.set_title('Lung U-Net on held-out adult films (cohen): mean, 95% bootstrap interval', fontsize=9)
  ax.legend(loc='lower left', fontsize=7)
  workdir_lib.write_figure(path, fig, dpi=100, metadata={'Software': None})
  plt.close(fig)


def sheet_files(folder: str, count: int = SHEET_FILMS) -> list[str]:
  """Up to `count` image files of folder, spread evenly over its sorted names."""
  from lungjax.tools import segment  # pylint: disable=g-import-not-at-top
  names = [n for n in segment.find_images(folder) if os.sep not in n]
  if len(names) <= count:
    return names
  return [names[int(i)] for i in np.linspace(0, len(names) - 1, count).round().astype(int)]


def contact_sheet(model: lungs_lib.LungModel, folder: str, title: str, path: str) -> dict[str, Any]:
  """24 films of folder with their predicted masks outlined (6 x 4); returns the mask statistics."""
  from lungjax.data import images  # pylint: disable=g-import-not-at-top
  names = sheet_files(folder)
  columns = 6
  rows = max(1, -(-len(names) // columns))
  fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.3 * rows + 0.4), squeeze=False,
                           layout='constrained')
  for ax in axes.flat:
    ax.axis('off')
  shares, parts, unreadable = [], [], []
  for ax, name in zip(axes.flat, names):
    try:
      with images.open_image(os.path.join(folder, name)) as opened:
        pixels_HWC = images.to_rgb_uint8(opened)
    except (OSError, ValueError, SyntaxError, images.BadImageError) as error:
      unreadable.append((name, str(error)))
      continue
    mask_HW = model.masks([pixels_HWC])[0]
    shares.append(float(mask_HW.mean()))
    parts.append(mask_parts(mask_HW))
    _show(ax, pixels_HWC)
    outline(ax, mask_HW, 'red', 1.0)
    ax.set_title(f'{name[:22]}\nmask {shares[-1]:.0%}, {parts[-1]} part(s)', fontsize=7)
  fig.suptitle(f'{title}: predicted lung masks (red), {len(names)} films', fontsize=10)
  workdir_lib.write_figure(path, fig, dpi=80, metadata={'Software': None})
  plt.close(fig)
  parts_N = np.asarray(parts)
  return {'folder': folder, 'films': names, 'n': len(shares), 'unreadable': unreadable,
          'mask_share_mean': float(np.mean(shares)) if shares else None,
          'mask_share_range': [float(np.min(shares)), float(np.max(shares))] if shares else None,
          'no_mask': int(np.sum(parts_N == 0)), 'two_parts': int(np.sum(parts_N == 2)),
          'other_parts': int(np.sum((parts_N != 0) & (parts_N != 2)))}


def _fmt(summary: dict[str, Any]) -> str:
  if summary['mean'] is None:
    return 'n/a (0 films)'
  low, high = summary['interval']
  return f'{summary["mean"]:.3f} [{low:.3f}, {high:.3f}] (n={summary["n"]})'


def report_markdown(report: dict[str, Any]) -> str:
  """report.md: the figures and how they were made."""
  test = report['test']
  lines = [
      '# The lung U-Net on held-out adult masks', '',
      f'Weights `{report["weights"]["file"]}` (sha256 `{report["weights"]["sha256"]}`, {report["weights"]["dtype"]}, '
      f'best step {report["weights"].get("step")}); run `{report["workdir"]}`. '
      f'{test["n"]} test films of {test["patients"]} patients (cohen-covid-chestxray, never trained on nor used to '
      'choose anything), each scored at its own size against its human-reviewed mask. Intervals: 95% percentile '
      f'bootstrap over films ({BOOTSTRAP} resamples).', '',
      '| films | n | Dice | IoU |', '|---|---|---|---|',
      f'| all | {test["n"]} | {_fmt(test["dice"])} | {_fmt(test["iou"])} |']
  for view in VIEWS:
    part = test['per_view'][view]
    lines.append(f'| {view} | {part["dice"]["n"]} | {_fmt(part["dice"])} | {_fmt(part["iou"])} |')
  if 'float16_vs_float32' in test:
    f16 = test['float16_vs_float32']
    lines += ['', f'float16 shipped weights against the float32 checkpoint: Dice between their masks '
              f'{f16["mean"]:.5f} (min {f16["min"]:.5f}) over the {test["n"]} test films; Dice against the truth '
              f'with float32 {_fmt(test["dice_float32"])}.']
  lines += ['', '![Dice per film and view](dice.png)']
  lines += ['', '## The 5 worst films', '', ', '.join(f'`{f}`' for f in test['worst5']), '', '![worst](worst5.png)',
            '', '## Contact sheets (no truth: mask statistics only)', '',
            '| source | films | mean mask share (range) | no mask | two parts | other |', '|---|---|---|---|---|---|']
  for name, sheet in report['sheets'].items():
    share_range = sheet['mask_share_range'] or [float('nan')] * 2
    lines.append(f'| [{sheet["title"]}](sheet_{name}.png) | {sheet["n"]} | {sheet["mask_share_mean"]:.3f} '
                 f'({share_range[0]:.3f}-{share_range[1]:.3f}) | {sheet["no_mask"]} | {sheet["two_parts"]} | '
                 f'{sheet["other_parts"]} |')
  missing = report['sources_missing']
  if missing:
    lines += ['', f'Sources not found (no sheet): {", ".join(missing)}']
  lines += ['', 'Parts: 8-connected pieces of the mask of at least 1% of the film each; two lungs give 2.', '']
  return '\n'.join(lines)


TRAIN_COMMAND = ('nice -n 10 python -m lungjax.main --config=configs/lungs.py --mode=train --workdir=W '
                 '--config.train.num_epochs=60')


def licence_counts(workdir: str) -> dict[str, int]:
  """How many of the run's training + validation films carry each licence of the metadata's `license` column."""
  split = workdir_lib.read_json(os.path.join(workdir, 'split.json'))
  with open(split['metadata'], newline='') as f:
    licences = {row['file']: row['license'].strip() or 'unstated' for row in csv.DictReader(f)}
  counts: dict[str, int] = {}
  for name in split['train'] + split['val']:
    counts[licences[name]] = counts.get(licences[name], 0) + 1
  return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def model_card(report: dict[str, Any], summary: dict[str, Any], licences: dict[str, int]) -> str:
  """lungs_unet.md: what the shipped lung weights are, their data's terms and their measured Dice."""
  test, weights = report['test'], report['weights']
  history = summary.get('history', [])
  epochs_run = history[-1]['epoch'] if history else None
  lines = [
      '# Lung U-Net weights (lungs_unet.npz)', '',
      'A small Flax U-Net (lungjax/models/unet.py; features '
      f'{weights.get("features")}, segments at {weights.get("size")} px / {weights.get("downsample")}) that gives '
      'each chest film a lung mask: `lungjax.segment(...)`, `lungjax.load_lungs()`, `lungjax segment --dir --out`, '
      '`--mode=shortcuts` (config.shortcuts.region=\'mask\') and config.data.preprocess.lungs=\'crop\'|\'fill\'.',
      '', f'- File: sha256 `{weights["sha256"]}`, {weights.get("dtype")} parameters ({summary.get("n_params")} of '
      'them), read back into float32 by load_lungs.',
      f'- Training: `{TRAIN_COMMAND}` (Dice + cross-entropy, Adam, cosine decay from 2e-3, batch 8; joint scale / '
      'shift / rotation / contrast / gamma / brightness augmentation, no flips), then '
      '`python -m lungjax.segmentation export --workdir=W` (the best validation-Dice checkpoint, as float16). '
      f'This copy: {epochs_run} epochs run of {summary.get("num_steps")} planned steps '
      f'({len(history)} epochs logged), best step {summary.get("best_step")}; how the settings were chosen: '
      'docs/lungs.md. `bash results/lungs/regenerate.sh` retrains and re-exports.',
      f'- Data: the {summary.get("n_train")} training and {summary.get("n_val")} validation films with lung masks '
      'of cohen-covid-chestxray (adult COVID-19 films; patients grouped; '
      f'{summary.get("n_test")} films of other patients held out as the test set).', '',
      '## Measured (results/lungs/report.md)', '',
      f'- Test Dice {_fmt(test["dice"])}, IoU {_fmt(test["iou"])}, at each film\'s own size.']
  for view in VIEWS:
    lines.append(f'- {view}: Dice {_fmt(test["per_view"][view]["dice"])}')
  if 'float16_vs_float32' in test:
    lines.append(f'- float16 against float32 masks: Dice {test["float16_vs_float32"]["mean"]:.5f} on average, '
                 f'{test["float16_vs_float32"]["min"]:.5f} at worst, over the test films.')
  lines += [
      '- Children: no paediatric film has a mask, so nothing is measured on children; see the contact sheets and '
      'their description in results/lungs/README.md before relying on the masks of a child\'s film.', '',
      '## Terms of the data', '',
      '- Research use only. Cite Cohen et al., "COVID-19 Image Data Collection: Prospective Predictions Are the '
      'Future", arXiv:2006.11988 (github.com/ieee8023/covid-chestxray-dataset), and the V7 Labs COVID-19 X-ray '
      'dataset (github.com/v7labs/covid-19-xray-dataset) for the masks.',
      '- The lung masks: CC BY 4.0 (V7 Labs).',
      '- The films keep their own licences, per the `license` column of cohen-covid-chestxray/metadata.csv; the '
      'training and validation films of this copy: ' + ', '.join(f'{name} {n}' for name, n in licences.items()) +
      '. Non-commercial (NC) and no-derivatives (ND) terms of some films may bind weights learnt from them: treat '
      'these weights as research-only.', '']
  return '\n'.join(lines)


def make_report(workdir: str, out: str, weights: str | None, data: str) -> dict[str, Any]:
  """Writes report.json, report.md, worst5.png and the sheets to `out`; returns the report."""
  model = lungs_lib.load_lungs(weights)
  try:
    reference = float32_model(workdir)
  except (FileNotFoundError, ValueError) as error:  # A run without checkpoints: no float32 comparison, said so.
    print(f'no float32 checkpoint to compare with: {error}', file=sys.stderr)
    reference = None
  os.makedirs(out, exist_ok=True)
  records, pictures = evaluate_test(workdir, model, reference)
  dice_N, iou_N = np.array([r['dice'] for r in records]), np.array([r['iou'] for r in records])
  views_N = np.array([r['view'] for r in records])
  test: dict[str, Any] = {
      'n': len(records), 'patients': len({r['patientid'] for r in records}),
      'dice': bootstrap_mean(dice_N), 'iou': bootstrap_mean(iou_N),
      'per_view': {view: {'dice': bootstrap_mean(dice_N[views_N == view]),
                          'iou': bootstrap_mean(iou_N[views_N == view])} for view in VIEWS},
      'worst5': worst_figure(records, pictures, os.path.join(out, 'worst5.png')), 'films': records}
  dice_figure(records, test, os.path.join(out, 'dice.png'))
  if reference is not None:
    f16_N = np.array([r['dice_float16_vs_float32'] for r in records])
    test['float16_vs_float32'] = {'mean': float(f16_N.mean()), 'min': float(f16_N.min())}
    test['dice_float32'] = bootstrap_mean(np.array([r['dice_float32'] for r in records]))
  sheets, missing = {}, []
  for name, relative, title in SOURCES:
    folder = os.path.join(data, relative)
    if not os.path.isdir(folder):
      missing.append(relative)
      continue
    sheets[name] = {'title': title, **contact_sheet(model, folder, title, os.path.join(out, f'sheet_{name}.png'))}
  report = {'tool': 'lungjax.tools.lungs_report', 'workdir': os.path.abspath(workdir),
            'weights': lungs_lib.weights_record(weights), 'test': test, 'sheets': sheets, 'sources_missing': missing}
  report['weights'].setdefault('dtype', model.meta.get('dtype'))
  workdir_lib.write_json(os.path.join(out, 'report.json'), report, indent=1)
  workdir_lib.write_text(os.path.join(out, 'report.md'), report_markdown(report))
  return report


def write_card(report: dict[str, Any], workdir: str, weights: str | None) -> str:
  """Writes the model card beside the weights (lungs_unet.md next to lungs_unet.npz); returns its path."""
  path = os.path.splitext(os.fspath(weights or lungs_lib.WEIGHTS_PATH))[0] + '.md'
  summary = workdir_lib.read_json(os.path.join(workdir, 'summary.json')) if os.path.isfile(
      os.path.join(workdir, 'summary.json')) else {}
  workdir_lib.write_text(path, model_card(report, summary, licence_counts(workdir)))
  return path


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True, help='the lung U-Net training run (its split.json)')
  parser.add_argument('--out', required=True, help='where the report goes (e.g. results/lungs)')
  parser.add_argument('--weights', default=None, help='an .npz of lungs.save_weights (default: shipped)')
  parser.add_argument('--data', default='../shared/data', help='the shared data folder (the sheets\' sources)')
  parser.add_argument('--card', action='store_true', help='also write the model card beside the weights')
  args = parser.parse_args(argv)
  report = make_report(args.workdir, args.out, args.weights, args.data)
  print(report_markdown(report))
  if args.card:
    print(f'model card: {write_card(report, args.workdir, args.weights)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
