"""The model card: what a trained workdir is for and what it was measured on (model_card.json and MODEL_CARD.md).

Training writes both once, at its end (write_model_card); each --mode=eval appends its folder's headline figures
to both (append_evaluation), leaving the rest as it was.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import subprocess
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from lungjax.runtime import workdir as workdir_lib
from lungjax.data import preprocess

JSON_NAME = 'model_card.json'
MARKDOWN_NAME = 'MODEL_CARD.md'
INTENDED_USE = ('Research only: a classifier of chest radiographs (Covid / Normal / Viral Pneumonia) trained and '
                'measured on small public data sets. It is not a medical device and must not be used for diagnosis, '
                'triage or any decision about a patient.')
_RESCALE = {'rescale': 'pixel / 255, inside the model', 'caffe': "Keras 'caffe': RGB to BGR minus ImageNet means"}
PACKAGES = ('jax', 'flax', 'optax', 'orbax-checkpoint', 'lungjax')


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str | None]:
  """The installed version of each distribution (None where it is not installed)."""
  versions = {}
  for name in packages:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def git_commit() -> str | None:
  """The commit of the checkout lungjax is imported from (with '-dirty' when it has changes), or None outside one."""
  folder = os.path.dirname(os.path.abspath(__file__))
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=folder, capture_output=True, text=True, timeout=10,
                            check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=folder, capture_output=True,
                           text=True, timeout=10, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return (commit + ('-dirty' if dirty else '')) or None


def _read_json(path: str) -> dict[str, Any] | None:
  if not os.path.exists(path):
    return None
  return workdir_lib.read_json(path)  # CorruptFileError names a card cut short.


def _counts(labels_N: np.ndarray, classes: Sequence[str]) -> dict[str, int]:
  return {name: int(np.sum(np.asarray(labels_N) == c)) for c, name in enumerate(classes)}


def _interval(metrics: dict[str, Any], *keys: str) -> list[float] | None:
  """metrics['intervals'][keys...] ('wilson' for accuracy), or None."""
  value = metrics.get('intervals', {})
  for key in keys:
    if not isinstance(value, dict) or key not in value:
      return None
    value = value[key]
  return value.get('wilson') if isinstance(value, dict) else value


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
  """An evaluation's headline figures from its metrics.json: accuracy (Wilson interval), macro recall (interval),
  and each class's sensitivity and specificity (intervals)."""
  per_class = {}
  for name, row in metrics.get('per_class', {}).items():
    per_class[name] = {key: {'value': row.get(key), 'interval': _interval(metrics, 'per_class', name, key)}
                       for key in ('sensitivity', 'specificity') if key in row}
  return {
      'n_images': metrics.get('n_images'), 'folder': metrics.get('folder'),
      'checkpoint_step': metrics.get('checkpoint_step'),
      'accuracy': {'value': metrics.get('accuracy'), 'interval': _interval(metrics, 'accuracy'),
                   'interval_method': 'Wilson'},
      'macro_recall': {'value': metrics.get('macro_avg', {}).get('recall'),
                       'interval': _interval(metrics, 'macro_avg', 'recall')},
      'per_class': per_class,
      'confidence': metrics.get('intervals', {}).get('confidence'),
  }


def model_card(workdir: str, config: ml_collections.ConfigDict, summary: dict[str, Any],
               run_fingerprint: dict[str, Any], data: Any, check_validation: bool = True) -> dict[str, Any]:
  """The card of a finished run: from its config, summary, run fingerprint, decoded data (train/val labels) and the
  workdir's eval/val/metrics.json and calibration.json (where present). check_validation: eval/val must be a whole
  report (workdir.check_unit), unless the caller drops the card's validation entry."""
  classes = tuple(config.data.classes)
  run = run_fingerprint.get('run', {})
  # IncompleteFolderError: a validation report half rewritten (a kill -9 while it was written).
  if check_validation and os.path.isdir(os.path.join(workdir, 'eval', 'val')):
    workdir_lib.check_unit(os.path.join(workdir, 'eval', 'val'), 'the validation report')
  validation = _read_json(os.path.join(workdir, 'eval', 'val', 'metrics.json'))
  calibration = _read_json(os.path.join(workdir, 'calibration.json'))
  training_data = {
      'root': config.data.root, 'folder': data.train_folder.folder,
      'counts': {'train': _counts(data.train.labels_N, classes), 'val': _counts(data.val.labels_N, classes)},
      'fingerprint': {'train_files': run.get('train_files'), 'val_files': run.get('val_files'),
                      'what': 'sha256 over (relative path, label, decoded-pixel sha256) of each image, in order'},
      'skipped_images': len(summary.get('skipped_images', [])),
      'grouping': ('grouped by ' + data.grouping.description if getattr(data, 'grouping', None) is not None
                   else 'grouped by copies'),
  }
  if config.data.get('sources'):
    training_data['sources'] = config.data.sources if isinstance(config.data.sources, str) else list(
        config.data.sources)
  return {
      'name': config.name, 'intended_use': INTENDED_USE,
      'model': {'name': config.model.name, 'n_params': summary.get('n_params'), 'classes': list(classes),
                'best_step': summary.get('best_step'), 'selected_by': summary.get('best_metric')},
      'training_data': training_data,
      'preprocessing': {
          'image_size': config.data.image_size,
          'decoding': 'any JPEG/PNG/DICOM to 8-bit RGB (grey repeated), resized bilinearly to image_size x '
                      'image_size',
          'rescale': _RESCALE.get(config.model.get('preprocessing', 'rescale'),
                                  config.model.get('preprocessing', 'rescale')),
          # config.data.preprocess (data/preprocess.py): the steps between decoding and the model.
          'steps': preprocess.record(preprocess.settings_of(config))},
      'recipe': {'optimizer': 'adam', 'learning_rate': config.train.learning_rate,
                 'lr_schedule': config.train.lr_schedule,
                 'adam': [config.train.adam_b1, config.train.adam_b2, config.train.adam_eps],
                 'epochs': config.train.num_epochs, 'batch_size': config.train.batch_size,
                 'steps': summary.get('num_steps'), 'class_weighting': config.train.class_weighting,
                 'source_weighting': config.train.source_weighting,
                 'augmentation': bool(config.augment.enabled), 'seed': config.seed,
                 'val_fraction': config.data.val_fraction},
      'validation': headline(validation) if validation else None,
      'calibration': None if calibration is None else {
          'method': calibration.get('method'), 'temperature': calibration.get('temperature'),
          'ece_raw': calibration.get('ece_raw'),
          'ece_calibrated_out_of_fold': calibration.get('ece_calibrated_out_of_fold'),
          'n_images': calibration.get('fitted_on', {}).get('n_images'),
          **({'served': calibration['served']} if calibration.get('served') else {})},
      'caveat': config.eval.caveat,
      'versions': package_versions(),
      'git_commit': git_commit(),
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'evaluations': [],
  }


def _figure(entry: dict[str, Any] | None) -> str:
  """`0.910 [0.820, 0.960]` of {'value', 'interval'}, or n/a."""
  if not entry or entry.get('value') is None:
    return 'n/a'
  interval = entry.get('interval')
  value = f'{entry["value"]:.3f}'
  return value if not interval else f'{value} [{interval[0]:.3f}, {interval[1]:.3f}]'


def evaluation_markdown(entry: dict[str, Any]) -> str:
  """The Markdown section --mode=eval appends: one folder's headline figures."""
  return '\n'.join([
      '', f'## Evaluation: {entry.get("name") or entry.get("folder")} ({entry["date"]})', '',
      f'- folder: `{entry.get("folder")}` ({entry.get("n_images")} images, checkpoint step '
      f'{entry.get("checkpoint_step")})',
      f'- accuracy (Wilson interval): {_figure(entry.get("accuracy"))}',
      f'- macro recall: {_figure(entry.get("macro_recall"))}', ''])


def card_markdown(card: dict[str, Any]) -> str:
  """MODEL_CARD.md of a card (without its evaluations, which are appended as they happen)."""
  model, data, recipe = card['model'], card['training_data'], card['recipe']
  lines = [f'# Model card: {card["name"]}', '', f'**Intended use.** {card["intended_use"]}', '',
           '## Model', '', f'- {model["name"]}, {model["n_params"]:,} parameters; classes: '
           f'{", ".join(model["classes"])}', f'- checkpoint step {model["best_step"]} (best by {model["selected_by"]})',
           '', '## Training data', '', f'- root: `{data["root"]}`']
  if 'sources' in data:
    lines.append(f'- sources: {data["sources"]}')
  lines += ['', '| split | ' + ' | '.join(model['classes']) + ' |', '|---' * (len(model['classes']) + 1) + '|']
  for split, counts in data['counts'].items():
    lines.append(f'| {split} | ' + ' | '.join(str(counts[c]) for c in model['classes']) + ' |')
  if data.get('grouping'):
    lines.append(f'\n- split {data["grouping"]}: a group is never on both sides of the split or a fold')
  for split in ('train_files', 'val_files'):
    print_ = data['fingerprint'].get(split)
    if print_:
      lines.append(f'\n- {split} fingerprint: {print_["n"]} images, sha256 `{print_["sha256"]}`')
  prep = card['preprocessing']
  lines += ['', '## Preprocessing', '', f'- {prep["decoding"]}; image size {prep["image_size"]}',
            f'- rescale: {prep["rescale"]}',
            f'- steps (config.data.preprocess, at training and in use alike): {prep.get("steps", {}).get("steps", "none")}',
            '', '## Recipe', '',
            f'- {recipe["optimizer"]}, learning rate {recipe["learning_rate"]} '
            f'({recipe.get("lr_schedule", "constant")}), {recipe["epochs"]} epochs of batch '
            f'{recipe["batch_size"]} ({recipe["steps"]} steps), class weighting {recipe["class_weighting"]}, source weighting '
            f'{recipe.get("source_weighting", "none")}, '
            f'augmentation {"on" if recipe["augmentation"] else "off"}, seed {recipe["seed"]}']
  validation = card['validation']
  lines += ['', '## Validation', '']
  if validation:
    lines += [f'- {validation["n_images"]} images; accuracy (Wilson interval): {_figure(validation["accuracy"])}; '
              f'macro recall: {_figure(validation["macro_recall"])}', '',
              '| class | sensitivity | specificity |', '|---|---|---|']
    for name, row in validation['per_class'].items():
      lines.append(f'| {name} | {_figure(row.get("sensitivity"))} | {_figure(row.get("specificity"))} |')
  else:
    lines.append('No validation split: no validation figures.')
  calibration = card['calibration']
  lines += ['', '## Calibration', '']
  if calibration:
    lines.append(f'- {calibration["method"]}: T = {calibration["temperature"]:.3f}; ECE raw '
                 f'{calibration["ece_raw"]:.3f}, after scaling (out of fold) '
                 f'{calibration["ece_calibrated_out_of_fold"]:.3f}')
    if calibration.get('served'):
      lines.append(f'- served: {calibration["served"]}')
  else:
    lines.append('No temperature was fitted (too few validation images): probabilities are the raw softmax.')
  versions = ', '.join(f'{k} {v}' for k, v in card['versions'].items() if v)
  lines += ['', '## Caveat', '', card['caveat'], '', '## Provenance', '', f'- versions: {versions}',
            f'- git commit: {card["git_commit"]}' if card['git_commit'] else '- git commit: not from a git checkout',
            f'- written {card["date"]}', '']
  return '\n'.join(lines)


def write_model_card(workdir: str, config: ml_collections.ConfigDict, summary: dict[str, Any],
                     run_fingerprint: dict[str, Any], data: Any) -> dict[str, Any]:
  """Writes workdir/model_card.json and MODEL_CARD.md (replacing an earlier run's); returns the card."""
  card = model_card(workdir, config, summary, run_fingerprint, data)
  workdir_lib.write_json(os.path.join(workdir, JSON_NAME), card)
  workdir_lib.write_text(os.path.join(workdir, MARKDOWN_NAME), card_markdown(card))
  return card


def append_evaluation(workdir: str, metrics: dict[str, Any], name: str) -> dict[str, Any] | None:
  """Appends an evaluation's headline figures to the workdir's model card (JSON 'evaluations' and a Markdown
  section); returns the entry, or None for a workdir without a card (trained before cards existed)."""
  json_path = os.path.join(workdir, JSON_NAME)
  card = _read_json(json_path)
  if card is None:
    return None
  entry = {'name': name, **headline(metrics),
           'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}
  card.setdefault('evaluations', []).append(entry)
  workdir_lib.write_json(json_path, card)  # Whole or not at all: a full disk leaves the old card.
  markdown_path = os.path.join(workdir, MARKDOWN_NAME)
  markdown = ''
  if os.path.isfile(markdown_path) and not os.path.islink(markdown_path):
    with open(markdown_path, encoding='utf-8', errors='surrogateescape') as f:
      markdown = f.read()
  workdir_lib.write_text(markdown_path, markdown + evaluation_markdown(entry))
  return entry
