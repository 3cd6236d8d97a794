"""The run fingerprint: what makes a resumed run the same run, stored with each checkpoint and compared on resume."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from lungjax.runtime import run_fields
from lungjax.data import images, preprocess, sources as sources_lib

MISMATCH_CHOICES = ('error', 'fresh')


def cpu_count() -> int:
  """The CPUs this process may run on (taskset / cgroup affinity), which XLA's CPU results depend on."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


def files_digest(decoded: images.DecodedImages, folder: str) -> dict[str, Any]:
  """The number of images and one sha256 over (relative path, label, pixel hash) in order."""
  digest = hashlib.sha256()
  for path, label, pixel_hash in zip(decoded.paths, decoded.labels_N.tolist(), decoded.pixel_hashes):
    digest.update(json.dumps([os.path.relpath(path, folder), label, pixel_hash]).encode())
  return {'n': len(decoded), 'sha256': digest.hexdigest()}


def _sources(config: ml_collections.ConfigDict, data: Any) -> dict[str, Any]:
  """With extra training sources: each source's name, folder, class mapping and its own files' digest (paths
  relative to its folder, so moving a source keeps its digest), and config.train.source_weighting."""
  extras = sources_lib.extra_sources(config)
  decoded = data.train_folder.decoded
  sources_N, _ = sources_lib.source_indices(decoded)
  names = [sources_lib.main_source_name(config)] + [source.name for source in extras]
  folders = [data.train_folder.folder] + [source.folder for source in extras]
  mappings = [{}] + [source.mapping for source in extras]
  described = []
  for s, (name, folder, mapping) in enumerate(zip(names, folders, mappings)):
    described.append({'name': name, 'folder': os.path.abspath(folder), 'class_names': mapping,
                      'files': files_digest(decoded.subset(np.flatnonzero(sources_N == s)), folder)})
  return {'sources': described, 'source_weighting': config.train.source_weighting}


def _grouping(data: Any) -> dict[str, Any]:
  """{'grouped_by': 'copies and patientid', 'groups_sha256'} where a metadata column grouped the split; {} for copies
  alone (the study's fingerprints stay as they were)."""
  grouping = getattr(data, 'grouping', None)
  if grouping is None or grouping.description == 'copies':
    return {}
  folder = data.train_folder.folder
  digest = hashlib.sha256()
  for path, group in zip(grouping.paths, grouping.groups_N.tolist()):
    digest.update(json.dumps([os.path.relpath(path, folder), int(group)]).encode())
  return {'grouped_by': grouping.description, 'groups_sha256': digest.hexdigest()}


def run_fingerprint(config: ml_collections.ConfigDict, data: Any, abstract_state: Any,
                    loader_threads: int) -> dict[str, Any]:
  """The fields a resumed run must share with its checkpoint ('run') and those that only change bits ('host').

  'run' holds run_fields.RUN_FIELDS (run_fields.fingerprint_record) and what the data fields select: the files'
  digests, the grouping, each extra source and the preprocessing record."""
  folder = data.train_folder.folder
  extra = _sources(config, data) if sources_lib.extra_sources(config) else {}
  if (prep := preprocess.settings_of(config)).active:  # What the model sees: off leaves old fingerprints as they were.
    extra['preprocess'] = preprocess.record(prep)
  record = run_fields.fingerprint_record(config)
  record['split'].update(_grouping(data))
  dtypes = sorted({str(np.dtype(x.dtype)) for x in jax.tree.leaves(abstract_state.params)})
  return {
      'run': {
          **record,
          'param_dtypes': dtypes,
          'train_files': files_digest(data.train, folder),
          'val_files': files_digest(data.val, folder),
          'process_count': jax.process_count(),
          'loader_threads': loader_threads,
          **extra,  # Only with several sources or preprocessing: the study's fingerprints are unchanged.
      },
      'host': {'cpu_count': cpu_count(), 'device_count': jax.device_count(),
               'platform': jax.devices()[0].platform},
  }


_flat = run_fields.flat


def _default_config_flat() -> dict[str, Any]:
  """The packaged default config (run_fields.defaults), flattened: the value of a field an older lungjax lacked."""
  return run_fields.flat(json.loads(json.dumps(run_fields.defaults())))


def diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """Lines 'field: saved X, now Y' for every field that differs (JSON round trip makes tuples lists).

  A field the saved record lacks counts as unchanged when its current value is the packaged default: fields added
  since (e.g. config.model.head) default to the behaviour that came before them, so an older checkpoint still
  restores; with any other value it differs.
  """
  saved_flat, current_flat = _flat(json.loads(json.dumps(saved))), _flat(json.loads(json.dumps(current)))
  defaults = None
  changed = []
  for field in sorted(set(saved_flat) | set(current_flat)):
    if saved_flat.get(field) == current_flat.get(field):
      continue
    if field not in saved_flat and field in current_flat:
      defaults = _default_config_flat() if defaults is None else defaults
      if any(field.endswith(key) and defaults[key] == current_flat[field] for key in defaults
             if field == key or field.endswith('.' + key)):
        continue
    changed.append(f'{field}: saved {saved_flat.get(field, "<absent>")!r}, now {current_flat.get(field, "<absent>")!r}')
  return changed


class FingerprintMismatchError(ValueError):
  """Resuming a checkpoint of another run: the message lists the fields that differ."""


def check_resume(saved: dict[str, Any] | None, current: dict[str, Any], on_mismatch: str, where: str) -> bool:
  """True when the checkpoint may be resumed; False when the user asked for a fresh start instead.

  Raises FingerprintMismatchError with the diff (on_mismatch='error'); warns when only the host changed.
  """
  if saved is None:
    changed = ['fingerprint: the checkpoint has none (saved by an older lungjax)']
  else:
    changed = diff(saved.get('run', {}), current['run'])
  if changed:
    if on_mismatch == 'fresh':
      warn(f'{where} belongs to another run ({"; ".join(changed)}): starting fresh, as '
                  'config.checkpoint.on_mismatch=fresh asks')
      return False
    raise FingerprintMismatchError(
        f'{where} was saved by a different run, so resuming it would not reproduce either run:\n  '
        + '\n  '.join(changed) + '\nUse the original config, another --workdir, or '
        '--config.checkpoint.on_mismatch=fresh to set these checkpoints aside and start over.')
  host_changed = diff(saved.get('host', {}), current['host'])
  if host_changed:
    warn(f'resuming {where} on another machine ({"; ".join(host_changed)}): training continues, but its '
                'bits will differ from an uninterrupted run (XLA results depend on the CPU count and devices)')
  return True


def inference_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What a checkpoint's arrays mean, as config fields (the RUN_FIELDS marked arrays):
  {'data': {'classes', 'image_size'}, 'model': {...}}."""
  out: dict[str, Any] = {}
  for run_field in run_fields.RUN_FIELDS:
    if run_field.arrays:
      *parents, last = run_field.field.split('.')
      node = out
      for parent in parents:
        node = node.setdefault(parent, {})
      found = run_fields.value(config, run_field.field)
      node[last] = found.to_dict() if isinstance(found, ml_collections.ConfigDict) else (
          list(found) if isinstance(found, tuple) else found)
  return out


def _recorded_inference_fields(run: dict[str, Any]) -> dict[str, Any]:
  """inference_fields' shape, read from a fingerprint's 'run' record (None where it lacks one)."""
  out: dict[str, Any] = {}
  for run_field in run_fields.RUN_FIELDS:
    if run_field.arrays:
      found: Any = run
      for name in run_field.key.split('.'):
        found = found.get(name) if isinstance(found, dict) else None
      *parents, last = run_field.field.split('.')
      node = out
      for parent in parents:
        node = node.setdefault(parent, {})
      node[last] = found
  return out


def check_inference(saved: dict[str, Any] | None, config: ml_collections.ConfigDict, where: str) -> None:
  """Refuses to restore for eval / explain / predict a checkpoint whose own record (its run fingerprint) names other
  classes (names or order), another model or another image size than `config` builds.

  Raises FingerprintMismatchError naming each field (config.data.classes, config.model.<field>,
  config.data.image_size); a checkpoint without a fingerprint (an older lungjax) only warns.
  """
  if saved is None:
    warn(f'{where} has no run fingerprint (saved by an older lungjax): its classes, model and image size cannot be '
         'checked against the config it is restored with')
    return
  run = saved.get('run', {})
  recorded = _recorded_inference_fields(run)
  changed = diff(recorded, inference_fields(config))
  if changed:
    raise FingerprintMismatchError(
        f'{where} was trained with other classes, model or image size than the config it is restored with, so its '
        'predictions would be mislabelled or meaningless:\n  '
        + '\n  '.join(f'config.{line}' for line in changed) + '\n("saved" is the checkpoint\'s own record; was the '
        'workdir\'s config.json edited or rewritten, or another config given?)')


def warn(message: str) -> None:
  """Logs a warning and prints it to stderr, so it shows even where logging is quiet."""
  logging.warning('%s', message)
  print(f'WARNING: {message}', file=sys.stderr, flush=True)
