"""The orbax CheckpointManager: save state + grain iterator + history + lungjax's checksums, verified restore.

Each step also holds an `integrity` JSON item: the sha256, dtype and shape of every state leaf, a hash of the
history, the iterator state and the run fingerprint. A restore recomputes the hashes of what orbax read back, so a
flipped byte, a truncated file or a missing item is an error naming the step, never silently wrong weights.

One way in, `restore(manager, which='resume'|'best'|STEP, ...)`, through restore_verified: 'resume' (training: the
newest good step, iterator in place, bad steps moved aside) or 'best' / a step (inference, behind
lungjax.inference.load, and the final evaluation); "best" (best_or_latest) is worked out in one place. resume,
restore_chosen and restore_state stay as the steps restore is built from (restore_state is deprecated).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from lungjax.runtime import fingerprint as fingerprint_lib, run_fields, workdir as workdir_lib
from lungjax.steps import TrainState

ITEMS = ('state', 'data_iter', 'history', 'integrity')
INTEGRITY_FORMAT = 1
TMP_MARK = '.orbax-checkpoint-tmp'  # orbax's suffix of an uncommitted step folder.


class CheckpointSaveError(RuntimeError):
  """A checkpoint could not be written (e.g. a full disk); older steps are untouched."""


class CorruptCheckpointError(RuntimeError):
  """A saved step is unreadable, incomplete, or reads back other values than lungjax saved."""

  def __init__(self, directory: str, step: int, reason: str):
    super().__init__(f'checkpoint step {step} in {directory!r} is corrupt or incomplete: {reason}')
    self.step = step
    self.reason = reason


class CheckpointMismatchError(ValueError):
  """A saved step holds arrays of other dtypes or shapes than the model asks for (orbax would cast silently)."""


class StepVanishedError(FileNotFoundError):
  """A step folder disappeared while it was read (a training run on the workdir deleted it): not corrupt."""

  def __init__(self, directory: str, step: int, reason: str):
    super().__init__(f'checkpoint step {step} in {directory!r} was deleted while it was read (a training run on this '
                     f'workdir keeps only its newest and best steps): {reason}')
    self.step = step


# How often eval / explain / predict list the steps again when the chosen one vanishes while it is read, and how
# long a reader waits to see whether an unreadable step is being deleted (orbax removes its files, then the folder).
READ_ATTEMPTS = 5
VANISH_WAIT_S = 1.0

# Validation metrics a checkpoint can be ranked by, and whether higher is better.
# worst_source_macro_recall: the lowest of the sources' macro recalls (each over the classes that source has).
BEST_METRICS = {'macro_recall': 'max', 'macro_f1': 'max', 'macro_precision': 'max', 'accuracy': 'max',
                'loss': 'min', 'worst_source_macro_recall': 'max',
                'dice': 'max'}  # dice: the lung U-Net's (config.task='lungs') validation Dice.


def checkpoint_dir(workdir: str) -> str:
  """Where a workdir keeps its checkpoints."""
  return os.path.abspath(os.path.join(workdir, 'checkpoints'))


# The only config fields that eval, explain and predict take from the command line (or the config they are given)
# rather than from the run's own config.json: how to evaluate and explain, where the data lies now, and settings of
# this process that change neither the model nor its inputs. A path covers a field or a whole sub-config.
INFERENCE_FIELDS = run_fields.RUNTIME_FIELDS  # Declared with the fields that define a run (run_fields.py).


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """Returns the config a training run saved in workdir/config.json, upgraded to this lungjax's format
  (run_fields.upgrade: fields an older lungjax did not write get their packaged defaults); run_config_for_inference
  merges."""
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise NotADirectoryError(f'--workdir={workdir!r} is a file, not a folder: --workdir must be a folder that '
                             'lungjax.main trained in')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path!r} not found: --workdir must be a folder that lungjax.main trained in')
  saved = workdir_lib.read_json(path)  # CorruptFileError names a cut config.json.
  if not isinstance(saved, dict):
    raise workdir_lib.CorruptFileError(f'{path!r} holds {type(saved).__name__}, not a config (a JSON object)')
  return ml_collections.ConfigDict(run_fields.upgrade(saved, path))


def _covers(paths: Sequence[str], field: str) -> bool:
  """True when `field` ('a.b.c') is one of paths or lies under one ('a', 'a.b')."""
  return run_fields.covers(tuple(paths), field)


def _as_json(value: Any) -> Any:
  """The value as config.json holds it (tuples become lists), to compare a given value with a saved one."""
  return json.loads(json.dumps(value))


def run_config_for_inference(workdir: str, given: ml_collections.ConfigDict | None = None,
                             overridden: Sequence[str] | None = None) -> ml_collections.ConfigDict:
  """The config eval, explain and predict restore workdir's run with: its config.json, plus INFERENCE_FIELDS.

  `overridden` lists the fields ('model.conv_features') set explicitly on the command line
  (config_flags.get_override_values); None means every field of `given` counts as set explicitly (a Python caller).
  An explicitly set field of INFERENCE_FIELDS is taken from `given`; any other explicitly set field that differs
  from the saved value raises ValueError naming the field, the saved value and the given one. Fields that only
  differ because another config file was given are taken from config.json (logged); sections config.json lacks
  even after its upgrade (load_run_config) from `given`. With `given` None: config.json as upgraded.
  """
  saved = load_run_config(workdir)
  if given is None:
    saved.lock()
    return saved
  where = os.path.join(workdir, 'config.json')
  conflicts, from_saved, added = [], [], []

  def merge(saved_tree: dict[str, Any], given_tree: dict[str, Any], prefix: str) -> dict[str, Any]:
    out = dict(saved_tree)
    for key, value in given_tree.items():
      field = f'{prefix}{key}'
      if key not in saved_tree:
        out[key] = value
        added.append(field)
      elif isinstance(value, dict) and isinstance(saved_tree[key], dict):
        out[key] = merge(saved_tree[key], value, f'{field}.')
      elif _as_json(value) != _as_json(saved_tree[key]):
        explicit = overridden is None or _covers(overridden, field)
        if explicit and _covers(INFERENCE_FIELDS, field):
          out[key] = value
        elif explicit:
          conflicts.append(f'config.{field}: the run saved {_as_json(saved_tree[key])!r}, given {_as_json(value)!r}')
        else:
          from_saved.append(field)
    return out

  merged = merge(saved.to_dict(), given.to_dict(), '')
  if conflicts:
    raise ValueError(
        f'eval, explain and predict rebuild the model that {workdir!r} trained, from {where!r}; these fields '
        'differ from it:\n  ' + '\n  '.join(conflicts) + '\nDrop those overrides (only '
        f'{", ".join(f"config.{path}" for path in INFERENCE_FIELDS)} may change), or train a new run.')
  if from_saved:
    logging.info('taken from %s, not from the given config (they differ but were not overridden): %s', where,
                 ', '.join(from_saved))
  if added:
    logging.info('not in %s, taken from the given config: %s', where, ', '.join(added))
  config = ml_collections.ConfigDict(merged)
  config.lock()
  return config


def create_manager(workdir: str, checkpoint_config: ml_collections.ConfigDict, *,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """A manager that keeps the `keep_latest` newest steps and the `keep_best` best by validation metric.

  A writable manager deletes the `*.orbax-checkpoint-tmp*` folders of saves a killed run never committed.
  """
  metric = checkpoint_config.best_metric  # One of BEST_METRICS (config_check.validate).
  mode = BEST_METRICS[metric]

  def metric_value(metrics: dict[str, float]) -> float:
    return metrics[f'val_{metric}']

  sign = 1.0 if mode == 'max' else -1.0
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=checkpoint_config.keep_latest),
      checkpoint_managers.BestN(get_metric_fn=lambda m: sign * metric_value(m), n=checkpoint_config.keep_best,
                                keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      best_fn=metric_value, best_mode=mode, preservation_policy=None if read_only else policy,
      read_only=read_only, create=not read_only, cleanup_tmp_directories=not read_only)
  if not read_only:
    remove_uncommitted(checkpoint_dir(workdir))
  check_step_metadata(checkpoint_dir(workdir), read_only=read_only)
  if read_only:
    return _open_read_only(checkpoint_dir(workdir), options)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=ITEMS)


def _open_read_only(directory: str, options: ocp.CheckpointManagerOptions) -> ocp.CheckpointManager:
  """A reader's manager. orbax reads every step's metadata as it opens: a training run deleting a step meanwhile
  makes that fail or miss every step, so it lists them again (READ_ATTEMPTS times at most)."""
  for attempt in range(1, READ_ATTEMPTS + 1):
    try:
      manager = ocp.CheckpointManager(directory, options=options, item_names=ITEMS)
    except FileNotFoundError as error:
      if attempt == READ_ATTEMPTS or not os.path.isdir(directory):
        raise
      logging.warning('%s: a step was deleted while the steps were listed (%s); listing them again', directory, error)
      continue
    if not manager.all_steps():
      reload(manager)
    return manager
  raise AssertionError('unreachable')


def check_step_metadata(directory: str, *, read_only: bool) -> None:
  """orbax parses each step's metrics and metadata JSON when a manager opens, and crashes on a damaged one: such a
  step raises CorruptCheckpointError naming it (read-only), or is moved to checkpoints.corrupt/ (training)."""
  if not os.path.isdir(directory):
    return
  for name in sorted(n for n in os.listdir(directory) if n.isdigit()):
    for part in ('_CHECKPOINT_METADATA', os.path.join('metrics', 'metrics')):
      path = os.path.join(directory, name, part)
      if not os.path.exists(path):
        continue
      try:
        with open(path) as f:
          json.load(f)
      except FileNotFoundError:  # Deleted meanwhile (a training run's retention): nothing left to check.
        break
      except (ValueError, UnicodeDecodeError) as error:
        corrupt = CorruptCheckpointError(directory, int(name), f'{part} is unreadable ({error})')
        if read_only:
          raise corrupt from error
        moved = quarantine(directory, int(name))
        logging.error('%s: skipped, moved to %s', corrupt, moved)
        print(f'ERROR: {corrupt}: skipped (moved to {moved})', file=sys.stderr, flush=True)
        break


def remove_uncommitted(directory: str) -> list[str]:
  """Deletes (on process 0) the tmp folders of saves that never committed, now rather than in orbax's background
  cleanup, which only finishes at the next save; returns their names."""
  if jax.process_index() != 0 or not os.path.isdir(directory):
    return []
  stale = sorted(name for name in os.listdir(directory) if TMP_MARK in name)
  for name in stale:
    shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    logging.warning('removed %s: a save that never committed (the run was killed or failed)',
                    os.path.join(directory, name))
  return stale




def _leaf_bytes(leaf: Any) -> np.ndarray:
  """A host copy of one leaf (PRNG key arrays as their raw key data)."""
  if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  return np.asarray(jax.device_get(leaf))


def leaf_checksums(tree: Any) -> dict[str, dict[str, Any]]:
  """{'path': {'sha256', 'dtype', 'shape'}} of every array leaf, from a host copy of its bytes."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    value = _leaf_bytes(leaf)
    digest = hashlib.sha256(value.tobytes()).hexdigest()
    out[jax.tree_util.keystr(path)] = {'sha256': digest, 'dtype': str(value.dtype), 'shape': list(value.shape)}
  return out


def _json_sha256(value: Any) -> str:
  return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  """True when every floating leaf of tree is finite (one scalar: cheap to fetch)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def check_finite_state(state: Any, step: int) -> None:
  """Raises FloatingPointError naming the step if any parameter or optimizer value is NaN or inf."""
  if not bool(_all_finite((state.params, state.opt_state))):
    raise FloatingPointError(f'parameters or optimizer state are NaN or inf at step {step}: stopping '
                             '(the checkpoint of this step is not written)')


def save_items(manager: ocp.CheckpointManager, step: int, state: Any, data_iter: grain.DatasetIterator,
               history: dict[str, Any], metrics: dict[str, float] | None,
               fingerprint: dict[str, Any] | None = None) -> None:
  """Saves (asynchronously) state, iterator, history and their checksums at `step`; never a non-finite state.

  Raises CheckpointSaveError when this save, or an earlier asynchronous one, failed.
  """
  check_finite_state(state, step)
  integrity = {'format': INTEGRITY_FORMAT, 'step': step, 'leaves': leaf_checksums(state),
               'history_sha256': _json_sha256(history), 'data_iter': data_iter.get_state(),
               'fingerprint': fingerprint}
  try:
    manager.save(step, metrics=metrics, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data_iter=grain.checkpoint.CheckpointSave(data_iter),
        history=ocp.args.JsonSave(history),
        integrity=ocp.args.JsonSave(integrity)))
  except Exception as error:  # orbax re-raises an earlier async failure here.
    raise CheckpointSaveError(f'saving checkpoint step {step} in {str(manager.directory)!r} failed: '
                              f'{type(error).__name__}: {error} (full disk? older steps are intact)') from error


def save(manager: ocp.CheckpointManager, state: TrainState, data_iter: grain.DatasetIterator,
         history: list[dict[str, float]], metrics: dict[str, float] | None,
         fingerprint: dict[str, Any] | None = None) -> None:
  """Saves (asynchronously) the state, the iterator position and the per-epoch history at state.step."""
  save_items(manager, int(state.step), state, data_iter, {'epochs': history}, metrics, fingerprint)


def wait(manager: ocp.CheckpointManager) -> None:
  """Waits for pending saves; raises CheckpointSaveError naming the folder when one failed."""
  try:
    manager.wait_until_finished()
  except Exception as error:
    raise CheckpointSaveError(f'a checkpoint save in {str(manager.directory)!r} failed: {type(error).__name__}: '
                              f'{error} (full disk? older steps are intact)') from error


@dataclasses.dataclass(frozen=True)
class Restored:
  """A verified step: its state, history JSON and the run fingerprint it was saved with."""

  step: int
  state: Any
  history: dict[str, Any]
  fingerprint: dict[str, Any] | None


def _check_target(directory: str, step: int, saved: dict[str, dict[str, Any]], abstract_state: Any) -> None:
  """Raises CheckpointMismatchError when the target's leaves differ from the saved ones in path, dtype or shape."""
  wanted = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]:
    dtype = leaf.dtype
    if jnp.issubdtype(dtype, jax.dtypes.prng_key):
      dtype = jax.eval_shape(jax.random.key_data, leaf).dtype
    wanted[jax.tree_util.keystr(path)] = (str(np.dtype(dtype)), list(leaf.shape))
  diffs = [f'{path}: saved {s["dtype"]}{s["shape"]}, wanted {wanted[path][0]}{wanted[path][1]}'
           for path, s in saved.items() if path in wanted and (s['dtype'], s['shape']) != wanted[path]]
  missing = sorted(set(saved) ^ set(wanted))
  if diffs or missing:
    raise CheckpointMismatchError(
        f'checkpoint step {step} in {directory!r} does not fit this model (orbax would cast or fail): '
        + '; '.join(diffs[:5] + [f'only in one of them: {missing[:5]}'] * bool(missing)))


def read_integrity(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """The checksum item of `step`; CorruptCheckpointError if it is missing, unreadable or not this step's."""
  directory = str(manager.directory)
  try:
    integrity = manager.restore(step, args=ocp.args.Composite(integrity=ocp.args.JsonRestore())).integrity
    integrity['leaves'].items()
  except Exception as error:  # A missing, truncated or unparsable checksum item.
    raise CorruptCheckpointError(directory, step, f'no readable lungjax checksums ({type(error).__name__}: '
                                 f'{str(error)[:200]})') from error
  if integrity.get('format') != INTEGRITY_FORMAT or integrity.get('step') != step:
    raise CorruptCheckpointError(directory, step, f'checksum item is for step {integrity.get("step")!r}, '
                                 f'format {integrity.get("format")!r}')
  return integrity


def step_exists(directory: str, step: int, wait_s: float = 0.0) -> bool:
  """Whether the committed folder of `step` is there, and still is after up to wait_s seconds."""
  path = os.path.join(directory, str(step))
  deadline = time.monotonic() + wait_s
  while os.path.isdir(path):
    if time.monotonic() >= deadline:
      return True
    time.sleep(0.05)
  return False


def restore_verified(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
                     data_iter: grain.DatasetIterator | None = None, *, vanish_wait_s: float = 0.0) -> Restored:
  """Restores `step` (and the iterator, in place, if given) and checks every leaf against the saved checksums.

  Raises CorruptCheckpointError naming the step when anything is unreadable, missing or different while the step's
  folder is still there (vanish_wait_s later), StepVanishedError when the folder went away (deleted by a training
  run's retention: not corrupt), and CheckpointMismatchError when the model wants other dtypes or shapes than were
  saved.
  """
  directory = str(manager.directory)
  try:
    integrity = read_integrity(manager, step)
    saved_leaves = integrity['leaves']
    _check_target(directory, step, saved_leaves, abstract_state)
    items = {'state': ocp.args.StandardRestore(abstract_state), 'history': ocp.args.JsonRestore()}
    if data_iter is not None:
      items['data_iter'] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as error:
      raise CorruptCheckpointError(directory, step, f'{type(error).__name__}: {str(error)[:300]}') from error
    actual = leaf_checksums(restored.state)
    bad = [path for path, entry in saved_leaves.items() if actual.get(path) != entry]
    if bad:
      raise CorruptCheckpointError(directory, step, f'{len(bad)} arrays read back other values than were saved '
                                   f'(sha256 mismatch), first {bad[0]}')
    if _json_sha256(restored.history) != integrity['history_sha256']:
      raise CorruptCheckpointError(directory, step, 'the history item differs from what was saved')
    if data_iter is not None and data_iter.get_state() != integrity['data_iter']:
      raise CorruptCheckpointError(directory, step, f'the iterator state reads {data_iter.get_state()}, '
                                   f'saved {integrity["data_iter"]}')
  except CorruptCheckpointError as error:
    if step_exists(directory, step, vanish_wait_s):
      raise
    raise StepVanishedError(directory, step, error.reason) from error
  return Restored(step, restored.state, dict(restored.history), integrity.get('fingerprint'))


def quarantine(workdir_checkpoints: str, step: int) -> str:
  """Moves a bad step folder out of the manager's sight, next to it (kept for inspection); returns where."""
  target = os.path.join(os.path.dirname(workdir_checkpoints), 'checkpoints.corrupt',
                        f'{step}-{time.strftime("%Y%m%dT%H%M%S")}')
  os.makedirs(os.path.dirname(target), exist_ok=True)
  shutil.move(os.path.join(workdir_checkpoints, str(step)), target)
  return target


def restore_latest_good(manager: ocp.CheckpointManager, abstract_state: Any,
                        data_iter: grain.DatasetIterator | None,
                        accept: Any = None) -> Restored | None:
  """To resume training: the newest step that verifies; bad steps are logged loudly and moved aside.

  `accept(integrity, step)` (optional) sees each step's checksum item before its arrays are read: it may raise
  (e.g. another run's fingerprint) or return False to stop and return None (start fresh).
  """
  directory = str(manager.directory)
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      if accept is not None and not accept(read_integrity(manager, step), step):
        return None
      return restore_verified(manager, step, abstract_state, data_iter)
    except CorruptCheckpointError as error:
      moved = quarantine(directory, step)
      logging.error('%s: skipped, moved to %s; trying the step before', error, moved)
      print(f'ERROR: {error}: skipped (moved to {moved})', file=sys.stderr, flush=True)
      manager.reload()
  return None


def resume(manager: ocp.CheckpointManager, workdir: str, checkpoint_config: ml_collections.ConfigDict,
           abstract_state: Any, data_iter: grain.DatasetIterator,
           fingerprint: dict[str, Any]) -> tuple[ocp.CheckpointManager, Restored | None]:
  """Restores the newest good step of the same run (iterator in place), or None to start fresh.

  A step saved under another fingerprint raises FingerprintMismatchError with the diff, unless
  config.checkpoint.on_mismatch='fresh': then the old checkpoints are moved to checkpoints.replaced-<time>/ and a
  new manager is returned.
  """
  initial_iter_state = data_iter.get_state()
  on_mismatch = checkpoint_config.on_mismatch  # One of MISMATCH_CHOICES (config_check.validate).

  def accept(integrity: dict[str, Any], step: int) -> bool:
    return fingerprint_lib.check_resume(integrity.get('fingerprint'), fingerprint, on_mismatch,
                                        f'checkpoint step {step} in {str(manager.directory)!r}')

  restored = restore_latest_good(manager, abstract_state, data_iter, accept)
  if restored is not None:
    return manager, restored
  data_iter.set_state(initial_iter_state)
  if manager.all_steps():  # Another run's checkpoints, set aside on request.
    manager.close()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = f'{checkpoint_dir(workdir)}.replaced-{stamp}'
    shutil.move(checkpoint_dir(workdir), aside)
    logging.warning('moved the other run\'s checkpoints to %s', aside)
    # Its reports (eval/, explain/ ...) and temperature too: none is read as the new run's (issue 26 Low 3).
    workdir_lib.set_aside_reports(workdir, os.path.join(workdir, f'reports.replaced-{stamp}'))
    manager = create_manager(workdir, checkpoint_config)
  return manager, None


def restore_state(manager: ocp.CheckpointManager, step: int, abstract_state: TrainState) -> TrainState:
  """Deprecated: restore(manager, step, abstract_state, workdir=...).state. Restores and verifies only the train
  state of `step`."""
  return restore_verified(manager, step, abstract_state).state


def best_or_latest(manager: ocp.CheckpointManager, ranked: bool = True) -> int | None:
  """The step "best" means, worked out here only: the best-ranked step (config.checkpoint.best_metric), else the
  latest (none ranked, or `ranked` False: a run without a validation split); None without checkpoints."""
  best = manager.best_step() if ranked else None
  return best if best is not None else manager.latest_step()


def choose_step(manager: ocp.CheckpointManager, requested: int, workdir: str) -> int:
  """Returns `requested` if >= 0 (it must exist), else best_or_latest."""
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f'no checkpoints in {checkpoint_dir(workdir)!r}: train first with --workdir={workdir}')
  if requested >= 0:
    if requested not in steps:
      raise ValueError(f'config.eval.step={requested} has no checkpoint in {checkpoint_dir(workdir)!r}; '
                       f'saved steps: {sorted(steps)}')
    return requested
  return best_or_latest(manager)


def restore_chosen(manager: ocp.CheckpointManager, abstract_state: Any, workdir: str, *, requested: int = -1,
                   fallback: bool = False, config: ml_collections.ConfigDict | None = None) -> Restored:
  """For inference (lungjax.inference.load): the verified choose_step() checkpoint.

  A corrupt one raises CorruptCheckpointError naming the step, unless `fallback`
  (config.checkpoint.fallback_to_good_step): then the newest other step that verifies is used, with a warning.
  With `config` (what abstract_state was built from), a step whose run fingerprint records other classes, another
  model or image size raises fingerprint.FingerprintMismatchError naming the field, before its arrays are read.
  A step deleted while it is read (a training run on the same workdir keeps only its newest and best) is not
  corrupt: the steps are listed again and the one chosen now is restored (READ_ATTEMPTS tries in all).
  """
  directory = str(manager.directory)

  def restore(step: int) -> Restored:
    if config is not None:
      try:
        integrity = read_integrity(manager, step)
      except CorruptCheckpointError as error:
        if step_exists(directory, step, VANISH_WAIT_S):
          raise
        raise StepVanishedError(directory, step, error.reason) from error
      fingerprint_lib.check_inference(integrity.get('fingerprint'), config, f'checkpoint step {step} in {directory!r}')
    return restore_verified(manager, step, abstract_state, vanish_wait_s=VANISH_WAIT_S)

  for attempt in range(1, READ_ATTEMPTS + 1):
    try:
      chosen = choose_step(manager, requested, workdir)
      try:
        return restore(chosen)
      except CorruptCheckpointError as error:
        if not fallback:
          raise CorruptCheckpointError(directory, chosen, error.reason +
                                       ' (set config.checkpoint.fallback_to_good_step=True to use the newest good '
                                       'step instead)') from error
        logging.error('%s; falling back to an older step', error)
      for step in sorted((s for s in manager.all_steps() if s != chosen), reverse=True):
        try:
          restored = restore(step)
        except CorruptCheckpointError as error:
          logging.error('%s; trying the step before', error)
          continue
        logging.warning('using checkpoint step %d instead of the corrupt step %d', step, chosen)
        return restored
      raise CorruptCheckpointError(directory, chosen, 'and no other step verifies either')
    except StepVanishedError as error:
      if attempt == READ_ATTEMPTS:
        raise
      logging.warning('%s; listing the steps again (try %d of %d)', error, attempt + 1, READ_ATTEMPTS)
      reload(manager)
  raise AssertionError('unreachable')


@dataclasses.dataclass(frozen=True)
class Resumed:
  """restore(which='resume'): the manager to go on with (a new one after on_mismatch='fresh' set the old
  checkpoints aside) and the restored step, or None to start fresh."""

  manager: ocp.CheckpointManager
  restored: Restored | None


def restore(manager: ocp.CheckpointManager, which: str | int, abstract_state: Any, *, workdir: str,
            data_iter: grain.DatasetIterator | None = None, checkpoint_config: ml_collections.ConfigDict | None = None,
            fingerprint: dict[str, Any] | None = None, fallback: bool = False,
            config: ml_collections.ConfigDict | None = None, ranked: bool = True) -> Restored | Resumed:
  """The one restore: every checkpoint read goes through checksum verification (restore_verified).

  which='resume' (training): the newest good step of the same run, `data_iter` set to its position; needs
  checkpoint_config and the run's `fingerprint`; bad steps are moved aside; returns Resumed.
  which='best': best_or_latest(manager, ranked); which=STEP (an int >= 0): that step (ValueError naming
  config.eval.step if it has none). Both return Restored; a corrupt step is an error unless `fallback`
  (config.checkpoint.fallback_to_good_step), and with `config` a step whose fingerprint records other classes,
  another model or image size is refused before its arrays are read (restore_chosen).
  """
  if which == 'resume':
    if data_iter is None or checkpoint_config is None or fingerprint is None:
      raise TypeError("restore(which='resume') needs data_iter, checkpoint_config and fingerprint")
    return Resumed(*resume(manager, workdir, checkpoint_config, abstract_state, data_iter, fingerprint))
  if which == 'best':
    requested = -1 if ranked else best_or_latest(manager, ranked=False)
    requested = -1 if requested is None else requested  # No checkpoints: choose_step names the folder.
  elif isinstance(which, int) and not isinstance(which, bool) and which >= 0:
    requested = which
  else:
    raise ValueError(f"restore(which={which!r}): which is 'resume', 'best' or a step >= 0")
  return restore_chosen(manager, abstract_state, workdir, requested=requested, fallback=fallback, config=config)


def reload(manager: ocp.CheckpointManager) -> None:
  """Lists the manager's steps again. A step deleted while orbax lists them makes it fail, or miss every step
  while step folders are there: then it lists them again (READ_ATTEMPTS times at most)."""
  directory = str(manager.directory)
  for attempt in range(1, READ_ATTEMPTS + 1):
    try:
      manager.reload()
    except FileNotFoundError as error:
      if attempt == READ_ATTEMPTS:
        raise
      logging.warning('%s: a step was deleted while the steps were listed (%s); listing them again', directory, error)
      continue
    if manager.all_steps() or attempt == READ_ATTEMPTS or not os.path.isdir(directory) or not any(
        name.isdigit() for name in os.listdir(directory)):
      return
    time.sleep(0.1)
