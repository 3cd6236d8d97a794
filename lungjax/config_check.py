"""validate(config, mode): the config's field values checked in one place, once, before any work.

Each error is a ValueError (FileNotFoundError for a missing extra source folder) that names the field and its value,
e.g. `config.train.num_epochs=0 is not allowed`. main calls it once; the library's functions assume a valid config
and keep only cheap assertions where a bad value would silently give wrong numbers (splits, evaluate.view_keys).
The parsers of structured fields stay with their modules and are run from here: config.augment
(augment.augment_settings), the extra sources (data/sources.extra_sources), config.distributed
(distributed.check_config), config.model (the registry's hook models.check: name, fields, each module's own checks,
Keras weights for init_from), config.train.cpu_compiler_options (steps.parse_compiler_options) and the [prepare]
extra for config.data.prepared_dir (data/loading.require_prepare_extra). Nothing here touches a device or decodes data.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from lungjax import autoencoder, checkpoints, models, steps
from lungjax.data import augment, folders, loading, metadata as metadata_lib, preprocess, sources as sources_lib, splits
from lungjax.runtime import distributed, fingerprint as fingerprint_lib, run_fields
from lungjax.cpu import host_memory

MODES = ('train', 'eval', 'explain', 'shortcuts')


# What each field _refuse_failed checks allows, said in its error.
_ALLOWED = {
    'config.eval.n_bootstrap': 'an integer >= 1', 'config.eval.batch_size': 'an integer >= 1',
    'config.data.image_size': 'an integer >= 8 (pixels per side; a model may also need a multiple, named then)',
    'config.train.num_epochs': 'an integer >= 1', 'config.train.learning_rate': 'a number > 0',
    'config.train.lr_schedule': "'constant' or 'cosine'", 'config.train.log_every_steps': 'an integer >= 1',
    'config.train.class_weighting': "'balanced' or 'none'",
    'config.train.source_weighting': f'one of {list(splits.SOURCE_WEIGHTINGS)}',
    'config.checkpoint.keep_latest': 'an integer >= 1', 'config.checkpoint.keep_best': 'an integer >= 0',
    'config.task': "'classify' or 'lungs'", 'config.name': 'a non-empty name (workdirs/<name> by default)',
    'config.eval.step': 'an integer: a checkpoint step, or -1 for the best', 'config.seed': 'an integer >= 0',
    'config.data.split_seed': 'an integer >= 0',
    'config.data.decode_threads': 'an integer >= 0 (0: one per CPU core)',
    'config.data.near_copy_threshold': 'a correlation in (0, 1]',
    'config.data.metadata_file_column': 'a column name', 'config.train.batch_size': 'an integer >= 1',
    'config.train.adam_b1': 'a number in [0, 1)', 'config.train.adam_b2': 'a number in [0, 1)',
    'config.train.adam_eps': 'a number > 0', 'config.train.freeze_backbone_epochs': 'an integer >= 0',
    'config.cv.folds': 'an integer: 0 (off) or >= 2',
}


def _refuse_failed(checks: list[tuple[str, Any, bool]]) -> None:
  """Raises ValueError naming the first (field, value, ok) whose ok is False, and what the field allows."""
  for field, value, ok in checks:
    if not ok:
      allowed = f': it must be {_ALLOWED[field]}' if field in _ALLOWED else ''
      raise ValueError(f'{field}={value!r} is not allowed{allowed}')


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_runtime(config: ml_collections.ConfigDict) -> None:
  """Fields every mode reads: how the process runs (host memory, multi-host) and how checkpoints are chosen."""
  host_memory.setting(config.train)  # config.train.keep_freed_host_memory_gb.
  if config.distributed.enabled:
    distributed.check_config(config.distributed)
  metric = config.checkpoint.best_metric
  if metric not in checkpoints.BEST_METRICS:
    raise ValueError(f'config.checkpoint.best_metric={metric!r} is not one of {sorted(checkpoints.BEST_METRICS)}')
  if metric == 'dice' and config.task != 'lungs':
    raise ValueError("config.checkpoint.best_metric='dice' is the lung U-Net's (config.task='lungs'): a classifier "
                     'reports no val_dice, so no checkpoint would ever be best; choose one of '
                     f"{sorted(set(checkpoints.BEST_METRICS) - {'dice'})}")
  on_mismatch = config.checkpoint.on_mismatch
  if on_mismatch not in fingerprint_lib.MISMATCH_CHOICES:
    raise ValueError(f'config.checkpoint.on_mismatch={on_mismatch!r} is not one of '
                     f'{list(fingerprint_lib.MISMATCH_CHOICES)}')
  tta_views = config.eval.tta_views
  if tta_views < 0:
    raise ValueError(f'config.eval.tta_views={tta_views} must be >= 0')
  check_subgroups(config)
  steps.parse_compiler_options(config.train.cpu_compiler_options)  # Names a malformed value's field.
  _refuse_failed([
      ('config.task', config.task, config.task in ('classify', 'lungs')),
      ('config.eval.n_bootstrap', config.eval.n_bootstrap, config.eval.n_bootstrap >= 1),
      ('config.eval.batch_size', config.eval.batch_size, config.eval.batch_size >= 1),
      ('config.eval.step', config.eval.step, _is_int(config.eval.step) and config.eval.step >= -1),
      ('config.data.decode_threads', config.data.decode_threads,
       _is_int(config.data.decode_threads) and config.data.decode_threads >= 0),
  ])


def check_subgroups(config: ml_collections.ConfigDict) -> None:
  """config.eval.metadata, metadata_file_column, subgroups and subgroup_min_images (data/metadata.py)."""
  table, column = config.eval.metadata, config.eval.metadata_file_column
  text, minimum = config.eval.subgroups, config.eval.subgroup_min_images
  if not _is_int(minimum) or minimum < 1:
    raise ValueError(f'config.eval.subgroup_min_images={minimum!r} must be an integer >= 1')
  if not isinstance(column, str) or not column:
    raise ValueError(f'config.eval.metadata_file_column={column!r} must name a column')
  if text and not table:
    raise ValueError(f'config.eval.subgroups={text!r} needs config.eval.metadata=CSV, the table they are read from')
  if not table:
    return
  found = metadata_lib.read_table(table, column, 'config.eval.metadata')
  for subgroup in metadata_lib.parse_subgroups(text) if text else ():
    if subgroup.column not in found.columns:
      raise ValueError(f'config.eval.subgroups={text!r}: {subgroup.column!r} is not a column of '
                       f'config.eval.metadata={table!r} (columns: {list(found.columns)})')
    for row in found.rows:  # A binned column's every value a number (Subgroup.label names the column otherwise).
      subgroup.label(row.get(subgroup.column, ''))


def check_training(config: ml_collections.ConfigDict) -> None:
  """The fields a training run reads: data, split, recipe, checkpoints, augmentation, repeats."""
  classes = tuple(config.data.classes)
  if len(classes) < 2 or len(set(classes)) != len(classes):
    raise ValueError(f'config.data.classes must list at least 2 distinct names, got {list(classes)}')
  val_fraction = config.data.val_fraction
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(f'config.data.val_fraction must be in [0, 1), got {val_fraction}')
  train, data = config.train, config.data
  _refuse_failed([
      ('config.name', config.name, isinstance(config.name, str) and bool(config.name.strip())),
      ('config.seed', config.seed, _is_int(config.seed) and config.seed >= 0),
      ('config.data.split_seed', data.split_seed, _is_int(data.split_seed) and data.split_seed >= 0),
      ('config.data.near_copy_threshold', data.near_copy_threshold,
       _is_number(data.near_copy_threshold) and 0 < data.near_copy_threshold <= 1),
      ('config.data.metadata_file_column', data.metadata_file_column,
       isinstance(data.metadata_file_column, str) and bool(data.metadata_file_column)),
      ('config.data.image_size', config.data.image_size, config.data.image_size >= 8),
      ('config.train.batch_size', train.batch_size, _is_int(train.batch_size) and train.batch_size >= 1),
      ('config.train.adam_b1', train.adam_b1, _is_number(train.adam_b1) and 0 <= train.adam_b1 < 1),
      ('config.train.adam_b2', train.adam_b2, _is_number(train.adam_b2) and 0 <= train.adam_b2 < 1),
      ('config.train.adam_eps', train.adam_eps, _is_number(train.adam_eps) and train.adam_eps > 0),
      ('config.train.freeze_backbone_epochs', train.freeze_backbone_epochs,
       _is_int(train.freeze_backbone_epochs) and train.freeze_backbone_epochs >= 0),
      ('config.cv.folds', config.cv.folds, _is_int(config.cv.folds) and (config.cv.folds == 0 or
                                                                        config.cv.folds >= 2)),
      ('config.train.num_epochs', config.train.num_epochs, config.train.num_epochs >= 1),
      ('config.train.learning_rate', config.train.learning_rate, config.train.learning_rate > 0),
      ('config.train.lr_schedule', config.train.lr_schedule, config.train.lr_schedule in ('constant', 'cosine')),
      ('config.train.log_every_steps', config.train.log_every_steps, config.train.log_every_steps >= 1),
      ('config.train.class_weighting', config.train.class_weighting,
       config.train.class_weighting in ('balanced', 'none')),
      ('config.train.source_weighting', config.train.source_weighting,
       config.train.source_weighting in splits.SOURCE_WEIGHTINGS),
      ('config.checkpoint.keep_latest', config.checkpoint.keep_latest, config.checkpoint.keep_latest >= 1),
      ('config.checkpoint.keep_best', config.checkpoint.keep_best, config.checkpoint.keep_best >= 0),
  ])
  if config.autoencoder.enabled:  # First: it names config.model.name for a non-CNN.
    check_autoencoder(config)
  models.check(config.model, len(classes))  # The registry's hook: name, fields, the module's own checks.
  folds, seeds = config.cv.folds, config.seeds
  if folds > 1 and seeds > 1:
    raise ValueError(f'config.cv.folds={folds} and config.seeds={seeds}: set config.cv.folds or config.seeds above '
                     '1, not both')
  if folds == 1 or seeds < 1:
    raise ValueError(f'config.cv.folds={folds} and config.seeds={seeds}: folds must be 0 or >= 2, seeds >= 1')
  by_source = config.cv.by_source
  if not isinstance(by_source, bool):
    raise ValueError(f'config.cv.by_source={by_source!r} must be True or False')
  if by_source and folds > 1:
    raise ValueError(f'config.cv.by_source=True and config.cv.folds={folds}: leave one source out or folds, not both')
  if by_source and not sources_lib.extra_sources(config):
    raise ValueError('config.cv.by_source=True needs at least two training sources: set config.data.extra_root or '
                     'config.data.extra_sources')
  augment.augment_settings(config.augment)  # Names the field of a bad augmentation value.
  sources_lib.extra_sources(config)  # Names the field of a bad extra source (config.data.extra_*).
  sources_lib.check_tables(config)  # config.data.metadata*, group_by: tables readable, their columns there.
  if config.data.prepared_dir:  # Before any data is read: TFDS and array_record are the [prepare] extra.
    loading.require_prepare_extra(f'config.data.prepared_dir={config.data.prepared_dir!r}')
  # settings_of names a bad field of config.data.preprocess and config.data.mask_markers (data/markers.py).
  if preprocess.settings_of(config).active and config.data.prepared_dir:
    raise ValueError(f'config.data.preprocess is on and config.data.prepared_dir={config.data.prepared_dir!r}: '
                     'prepared data holds pixels decoded without it; decode config.data.root instead')


def check_autoencoder(config: ml_collections.ConfigDict) -> None:
  """The autoencoder's pre-training (stage 1) settings, when config.autoencoder.enabled."""
  if config.model.name != 'cnn':
    raise ValueError(f'config.autoencoder.enabled pretrains the CNN\'s conv stack, so config.model.name must be '
                     f'\'cnn\', got {config.model.name!r}')
  ae = config.autoencoder
  _refuse_failed([
      ('config.autoencoder.num_epochs', ae.num_epochs, _is_int(ae.num_epochs) and ae.num_epochs >= 1),
      ('config.autoencoder.learning_rate', ae.learning_rate, ae.learning_rate > 0),
      ('config.autoencoder.batch_size', ae.batch_size, _is_int(ae.batch_size) and ae.batch_size >= 1),
      ('config.autoencoder.extra_dirs', ae.extra_dirs,
       isinstance(ae.extra_dirs, (tuple, list)) and all(isinstance(d, str) and d for d in ae.extra_dirs)),
      ('config.model.conv_features', config.model.conv_features, len(config.model.conv_features) >= 1),
  ])
  if config.model.init_from:
    raise ValueError(f'config.model.init_from={config.model.init_from!r} and config.autoencoder.enabled both load '
                     'the conv stack\'s starting weights: set one of them')
  factor = 2**len(config.model.conv_features)
  if config.data.image_size % factor:
    raise ValueError(f'config.data.image_size={config.data.image_size} must be divisible by {factor} for the '
                     f'autoencoder to reconstruct it ({len(config.model.conv_features)} 2x2 poolings)')
  autoencoder.extra_image_paths(config)  # Each config.autoencoder.extra_dirs folder there and holding images.


SHORTCUTS_REGIONS = ('mask', 'box')  # config.shortcuts.region (shortcuts.REGIONS).


def shortcuts_region(config: ml_collections.ConfigDict) -> str:
  """config.shortcuts.region ('mask' in a config.json saved before the field existed: run_fields.upgrade fills it);
  shortcuts.region_of."""
  return config.shortcuts.region


def check_shortcuts_region(config: ml_collections.ConfigDict) -> None:
  """config.shortcuts.region: 'mask' (needs the shipped lung weights) or 'box'."""
  from lungjax import lungs  # pylint: disable=g-import-not-at-top
  region = shortcuts_region(config)
  if region not in SHORTCUTS_REGIONS:
    raise ValueError(f'config.shortcuts.region={region!r} is not one of {list(SHORTCUTS_REGIONS)}')
  if region == 'mask' and not os.path.isfile(lungs.WEIGHTS_PATH):
    raise ValueError(f"config.shortcuts.region='mask' needs the lung U-Net's weights {lungs.WEIGHTS_PATH}, which "
                     "are missing: pass --config.shortcuts.region=box (the fixed box)")


def check_lungs(config: ml_collections.ConfigDict, mode: str) -> None:
  """The lung U-Net's fields (configs/lungs.py): config.task='lungs' trains it; it has no eval/explain modes."""
  if mode != 'train':
    raise ValueError(f'config.task=\'lungs\' trains the lung U-Net: --mode={mode!r} is for classifiers (the lung '
                     'report is lungjax/tools/lungs_report.py)')
  from lungjax import segmentation  # pylint: disable=g-import-not-at-top
  lungs, model = config.lungs, config.model
  _refuse_failed([
      ('config.model.name', model.name, model.name == 'unet'),
      ('config.model.features', model.features, len(model.features) >= 2 and all(
          _is_int(f) and f >= 1 for f in model.features)),
      ('config.model.downsample', model.downsample, _is_int(model.downsample) and model.downsample >= 1),
      ('config.model.dtype', model.dtype, model.dtype in ('float32', 'bfloat16')),
      ('config.data.image_size', config.data.image_size, _is_int(config.data.image_size) and (
          not _is_int(model.downsample) or model.downsample < 1 or  # Named by its own row above.
          config.data.image_size % (2**(len(model.features) - 1) * model.downsample) == 0)),
      ('config.data.val_fraction', config.data.val_fraction, 0.0 <= config.data.val_fraction < 1.0),
      ('config.lungs.test_fraction', lungs.test_fraction, 0.0 <= lungs.test_fraction < 1.0),
      ('config.lungs.dice_weight', lungs.dice_weight, lungs.dice_weight >= 0),
      ('config.lungs.limit', lungs.limit, _is_int(lungs.limit) and lungs.limit >= 0),
      ('config.train.num_epochs', config.train.num_epochs, config.train.num_epochs >= 1),
      ('config.train.batch_size', config.train.batch_size, config.train.batch_size >= 1),
      ('config.train.learning_rate', config.train.learning_rate, config.train.learning_rate > 0),
      ('config.train.lr_schedule', config.train.lr_schedule, config.train.lr_schedule in ('constant', 'cosine')),
      ('config.checkpoint.best_metric', config.checkpoint.best_metric, config.checkpoint.best_metric in ('dice',
                                                                                                        'loss')),
      ('config.checkpoint.keep_latest', config.checkpoint.keep_latest, config.checkpoint.keep_latest >= 1),
      ('config.checkpoint.keep_best', config.checkpoint.keep_best, config.checkpoint.keep_best >= 0),
  ])
  if not os.path.isfile(lungs.metadata):
    raise FileNotFoundError(f'config.lungs.metadata={lungs.metadata!r} is not a file (cohen-covid-chestxray/'
                            'metadata.csv: films with a lung_mask column)')
  segmentation.mask_rows(lungs.metadata)  # Names the table when a column is missing.
  for field in ('scale', 'shift', 'rotation_degrees', 'contrast', 'gamma', 'brightness'):
    low_high = lungs.augment[field]
    if len(low_high) != 2 or not low_high[0] <= low_high[1]:
      raise ValueError(f'config.lungs.augment.{field}={low_high!r} must be a (low, high) pair with low <= high')
  if lungs.augment.scale[0] <= 0:
    raise ValueError(f'config.lungs.augment.scale={lungs.augment.scale!r} must be above 0')


def check_eval_dir(config: ml_collections.ConfigDict, mode: str) -> None:
  """config.eval.dir and config.eval.class_names of --mode=eval ('A' or 'A,B') and --mode=shortcuts (one folder):
  given, each a folder ('@validation': the run's validation split), no two with the same basename; and each run of
  config.eval.ensemble (--mode=eval) a folder with a config.json."""
  text = config.eval.dir
  if not text:
    raise ValueError(f'--mode={mode} needs a folder of class sub-folders: pass --config.eval.dir=FOLDER')
  folders.parse_folder_names(config.eval.class_names, config.data.classes)  # Names config.eval.class_names.
  if mode == 'eval':  # Each more run of config.eval.ensemble ('W1,W2'): a folder lungjax trained in.
    for member in (w.strip() for w in config.eval.ensemble.split(',') if w.strip()):
      if not os.path.isfile(os.path.join(member, 'config.json')):
        raise FileNotFoundError(f'config.eval.ensemble={config.eval.ensemble!r}: {member!r} is not a folder that '
                                'lungjax.main trained in (no config.json there)')
  if text == loading.VALIDATION:
    return
  paths = loading.eval_folders(text)
  if mode == 'shortcuts' and len(paths) != 1:
    raise ValueError(f'config.eval.dir={text!r}: --mode=shortcuts checks one folder, not {len(paths)}')


def check_explain(config: ml_collections.ConfigDict) -> None:
  """config.explain.dir (a folder of images, or of class sub-folders) and config.explain.class_name.

  explain.explain_folder calls it again on the run's config (its classes come from the run)."""
  folder = config.explain.dir
  if not folder:
    raise ValueError('--mode=explain needs a folder of images: pass --config.explain.dir=FOLDER')
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'config.explain.dir={folder!r} is not a folder')
  entries = [e for e in os.scandir(folder) if not e.name.startswith('.')]
  if not any(e.is_dir() or (e.is_file() and folders.is_image_file(e.name)) for e in entries):
    raise ValueError(f'config.explain.dir={folder!r} has no .jpg/.jpeg/.png images and no class sub-folders')
  class_name, classes = config.explain.class_name, list(config.data.classes)
  if class_name and class_name not in classes:
    raise ValueError(f'config.explain.class_name={class_name!r} is not one of config.data.classes {classes}')


def validate(config: ml_collections.ConfigDict, mode: str = 'train') -> None:
  """Raises ValueError naming the first field whose value `mode` cannot work with; returns None when all are fine.

  mode: 'train' checks everything a training run reads; 'eval', 'explain' and 'shortcuts' check what they read from
  the command line (the model's fields come from the run's config.json, checked when it trained).
  """
  if mode not in MODES:
    raise ValueError(f'--mode={mode!r} is not one of {list(MODES)}')
  config = run_fields.with_defaults(config)  # What a config lacks is checked at its packaged default.
  check_runtime(config)
  if config.task == 'lungs':
    check_lungs(config, mode)
  elif mode == 'train':
    check_training(config)
  if mode == 'shortcuts':
    check_shortcuts_region(config)
  if mode == 'explain':
    check_explain(config)
  elif mode in ('eval', 'shortcuts'):
    check_eval_dir(config, mode)
