"""Which config fields define a run, declared once; and the one place their defaults come from.

A training run is the same run when its RUN_FIELDS (and the data the fingerprint digests) are the same: the fingerprint
(fingerprint.run_fingerprint) is built from RUN_FIELDS, the fields that give a checkpoint's arrays their meaning
(fingerprint.inference_fields) are the RUN_FIELDS marked `arrays`, and autoencoder's stage-1 settings.json holds
STAGE1_FIELDS. RUNTIME_FIELDS may change between training and resume or inference (checkpoints.INFERENCE_FIELDS:
how to evaluate and explain, where the data lies now, settings of this process). Every other field of the packaged
config is listed in DIGESTED_FIELDS (the fingerprint records the data they select, not the value) or OTHER_FIELDS
(they may change on resume: how long to train, what to keep), so a field added to lungjax/configs/cnn.py must be
placed in one of them (run_fields_test).

Defaults: the packaged default config (lungjax/configs/cnn.py), in one upgrade step (upgrade, by
config.format_version: checkpoints.load_run_config runs it on every config.json it reads, main and train on the
config they are given) that fills what a config saved by an older lungjax lacks; a field added since defaults to the
behaviour that came before it (docs/config.md). This module imports nothing of lungjax beyond the configs, so
fingerprint, checkpoints and config_check all read it without an import cycle.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any

import ml_collections


@dataclasses.dataclass(frozen=True)
class RunField:
  """One config field (or sub-config) that defines a run, and where the fingerprint's 'run' record holds it."""

  field: str  # 'train.learning_rate', or a whole sub-config ('model').
  key: str  # Its path in the fingerprint's 'run' record ('optimizer.learning_rate').
  omit_default: bool = False  # Recorded only when not its default (added later: older fingerprints stay valid).
  arrays: bool = False  # Gives the checkpoint's arrays their meaning: checked again at eval / explain / predict.


RUN_FIELDS: tuple[RunField, ...] = (
    RunField('model', 'model', arrays=True),
    RunField('seed', 'seed'),
    RunField('train.batch_size', 'batch_size'),
    *(RunField(f'train.{name}', f'optimizer.{name}') for name in (
        'learning_rate', 'adam_b1', 'adam_b2', 'adam_eps', 'class_weighting', 'freeze_backbone_epochs')),
    RunField('augment', 'augment'),
    RunField('data.image_size', 'image_size', arrays=True),
    RunField('data.classes', 'classes', arrays=True),
    *(RunField(f'data.{name}', f'split.{name}') for name in ('val_fraction', 'split_seed', 'near_copy_threshold')),
    RunField('train.source_weighting', 'source_weighting', omit_default=True),
    RunField('train.lr_schedule', 'lr_schedule', omit_default=True),
)

# Stage 1 (autoencoder.pretrain) resumes only under the same values of these (config.autoencoder.num_epochs may grow).
STAGE1_FIELDS: tuple[str, ...] = ('model.conv_features', 'data.image_size', 'autoencoder.batch_size',
                                  'autoencoder.learning_rate', 'autoencoder.extra_dirs', 'seed')

# May differ from the run's config.json at resume, eval, explain and predict. A path covers a field or a sub-config.
RUNTIME_FIELDS: tuple[str, ...] = (
    'eval', 'explain', 'shortcuts',
    'data.root', 'data.prepared_dir', 'data.kaggle_dataset', 'data.decode_threads', 'data.skip_bad_images',
    'checkpoint.fallback_to_good_step', 'distributed',
    'train.keep_freed_host_memory_gb', 'train.cpu_compiler_options',
)

# The fingerprint records what these select (each source's files and class mapping, the copy / metadata groups, the
# preprocessing record), not the value itself: moving a folder keeps the run.
DIGESTED_FIELDS: tuple[str, ...] = (
    'data.source_name', 'data.extra_root', 'data.extra_class_names', 'data.extra_source_name', 'data.extra_sources',
    'data.metadata', 'data.extra_metadata', 'data.metadata_file_column', 'data.group_by', 'data.preprocess',
    'data.mask_markers',
)

# Neither: a resume may change them (train longer, keep more checkpoints, name the run) or they choose which runs
# happen (cv, seeds) or belong to stage 1 outside STAGE1_FIELDS (autoencoder.enabled, num_epochs, freeze_encoder).
OTHER_FIELDS: tuple[str, ...] = (
    'format_version', 'task', 'name', 'seeds', 'cv', 'train.num_epochs', 'train.log_every_steps',
    'checkpoint.best_metric', 'checkpoint.keep_best', 'checkpoint.keep_latest', 'checkpoint.on_mismatch', 'autoencoder',
)


def covers(paths: tuple[str, ...] | list[str], field: str) -> bool:
  """True when `field` ('a.b.c') is one of paths or lies under one ('a', 'a.b')."""
  return any(field == path or field.startswith(f'{path}.') for path in paths)


@functools.cache
def _defaults() -> dict[str, Any]:
  from lungjax.configs import cnn  # pylint: disable=g-import-not-at-top  (configs import nothing of lungjax)
  return cnn.get_config().to_dict()


def defaults() -> dict[str, Any]:
  """The packaged default config (lungjax/configs/cnn.py) as a fresh nested dict (its tuples kept)."""
  return copy.deepcopy(_defaults())


def flat(tree: Any, prefix: str = '') -> dict[str, Any]:
  """{'a.b': leaf} of nested dicts; lists and tuples as JSON-like lists."""
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(flat(value, f'{prefix}{key}.'))
    return out
  return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def default(field: str) -> Any:
  """The packaged default of one field ('train.source_weighting'); KeyError for a field the default config lacks."""
  node: Any = defaults()
  for name in field.split('.'):
    node = node[name]
  return node


def value(config: ml_collections.ConfigDict, field: str) -> Any:
  """config's value of `field` ('a.b'); config is upgraded (upgrade / with_defaults), so every field is there."""
  node: Any = config
  for name in field.split('.'):
    node = node[name]
  return node


# config.format_version of what this lungjax writes (config.json holds it). 0: a config.json without the field,
# written before it existed. upgrade() brings any older one to this version.
FORMAT_VERSION = 1

# Which packaged config holds each model's (and each task's) defaults: config.model's fields belong to its model, so a
# model's missing fields come from its own packaged config, never from the CNN's.
_MODEL_CONFIGS = {'cnn': 'cnn', 'resnet': 'resnet', 'vgg': 'vgg', 'unet': 'lungs'}
_TASK_CONFIGS = {'lungs': 'lungs'}  # Sections only a task has (config.lungs), from that task's packaged config.
# Fields whose packaged default is not what lungjax did before they existed: a config of format 0 (no
# format_version) that lacks one gets the value lungjax ran with then (glibc's malloc defaults, no XLA options).
_BEFORE_IT_EXISTED = {'train.keep_freed_host_memory_gb': 0.0, 'train.cpu_compiler_options': ''}


@functools.cache
def _packaged(name: str) -> dict[str, Any]:
  import importlib  # pylint: disable=g-import-not-at-top
  return importlib.import_module(f'lungjax.configs.{name}').get_config().to_dict()


def _fill(given: dict[str, Any], default_tree: dict[str, Any]) -> dict[str, Any]:
  """given with every key of default_tree it lacks added (recursively; given's own values and extra keys kept)."""
  out = dict(given)
  for key, default_value in default_tree.items():
    if key not in out:
      out[key] = copy.deepcopy(default_value)
    elif isinstance(out[key], dict) and isinstance(default_value, dict):
      out[key] = _fill(out[key], default_value)
  return out


def upgrade(config_dict: dict[str, Any], where: str = 'the config') -> dict[str, Any]:
  """The one upgrade step: a config (a config.json's dict, or a config file's) of any older format, as this lungjax
  reads it, at config.format_version=FORMAT_VERSION. Returns a new dict; config_dict is not changed.

  Every field of the packaged default config (lungjax/configs/cnn.py) the dict lacks is filled with its default (a
  field added since defaults to the behaviour that came before it: _BEFORE_IT_EXISTED where the default is not that
  behaviour); config.model's missing fields come from the packaged config of that model (configs/resnet.py for
  'resnet', ...), config.lungs's from configs/lungs.py when config.task='lungs'. Sections and fields the defaults
  lack are kept. After it, read fields directly: no `.get(field, default)`. ValueError naming config.format_version
  (and `where`) for a format this lungjax does not know (a newer lungjax wrote it).
  """
  version = config_dict.get('format_version', 0)
  if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= FORMAT_VERSION:
    raise ValueError(f'{where}: config.format_version={version!r} is not one this lungjax reads (0 to '
                     f'{FORMAT_VERSION}; a newer lungjax wrote it?)')
  model = config_dict.get('model')
  if version == 0:
    config_dict = copy.deepcopy(config_dict)
    for field, before in _BEFORE_IT_EXISTED.items():
      section, name = field.split('.')
      if isinstance(config_dict.get(section), dict) and name not in config_dict[section]:
        config_dict[section][name] = before
  out = _fill({k: v for k, v in config_dict.items() if k != 'model'}, {
      k: v for k, v in defaults().items() if k != 'model'})
  if isinstance(model, dict):
    packaged_model = _MODEL_CONFIGS.get(model.get('name'))
    out['model'] = _fill(model, _packaged(packaged_model)['model']) if packaged_model else dict(model)
  elif model is not None:
    out['model'] = model
  else:
    out['model'] = defaults()['model']
  task_config = _TASK_CONFIGS.get(out['task'])
  if task_config:
    out = _fill(out, {k: v for k, v in _packaged(task_config).items() if k not in defaults()})
  out['format_version'] = FORMAT_VERSION
  return out


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of config upgraded (upgrade: every field it lacks filled with its packaged default), locked if config
  was. Read the copy's fields directly: no `.get(field, default)`."""
  filled = ml_collections.ConfigDict(upgrade(config.to_dict()))
  if config.is_locked:
    filled.lock()
  return filled


def fingerprint_record(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config part of the fingerprint's 'run' record: each RUN_FIELDS value at its key (nested by '.'), as JSON
  holds it; an omit_default field only where it is not its default."""
  config = with_defaults(config)  # A caller's config of an older format reads as its upgrade.
  record: dict[str, Any] = {}
  for run_field in RUN_FIELDS:
    found = value(config, run_field.field)
    found = found.to_dict() if isinstance(found, ml_collections.ConfigDict) else found
    found = list(found) if isinstance(found, tuple) else found
    if run_field.omit_default and found == default(run_field.field):
      continue
    *parents, last = run_field.key.split('.')
    node = record
    for parent in parents:
      node = node.setdefault(parent, {})
    node[last] = found
  return record
