"""Who owns a folder lungjax writes to: the run marker and lock of a workdir, and safe output paths.

lungjax never overwrites a file it did not write:

- A training run claims its workdir: a missing or empty folder gets the run marker `.lungjax-run`; a folder with
  the marker, or one an older lungjax trained in (its config.json beside checkpoints/), is a run and may be resumed;
  any other non-empty folder is refused (ForeignFolderError names it).
- A training run holds `WORKDIR/.lock` (an exclusive flock, and the holder's pid and host in the file) until it
  ends: a second run on the same workdir fails at once (WorkdirBusyError names the holder). The kernel drops the
  lock of a process that died; its leftover file is taken over with a warning.
- Output folders outside a workdir (predict --gradcam_dir) and explain's overlays folder keep a manifest,
  `.lungjax-outputs.json`, of the files lungjax claimed there: a file that exists and is not in it, or that is one
  of the inputs, is never written over (ForeignFileError names it).

Multi-host runs: only process 0 claims, locks and writes (the others compute).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any

from absl import logging

from lungjax import distributed

RUN_MARKER = '.lungjax-run'
LOCK = '.lock'
MANIFEST = '.lungjax-outputs.json'
_WRITER = 'lungjax'
# Older lungjax versions left no marker: a folder is one of their runs when its config.json holds these sections.
_LEGACY_CONFIG_KEYS = ('data', 'model', 'train', 'checkpoint')


class ForeignFolderError(FileExistsError):
  """--workdir names a non-empty folder that no lungjax run created: lungjax writes nothing into it."""


class WorkdirBusyError(RuntimeError):
  """Another process holds the workdir's lock: two runs on one workdir would replace each other's files."""


class ForeignFileError(FileExistsError):
  """An output path holds a file lungjax did not write (or one of the inputs): lungjax writes nothing over it."""


# ---- a training run's workdir -----------------------------------------------------------------------------------


def is_legacy_run(workdir: str) -> bool:
  """Whether an older lungjax trained here: a config.json of lungjax's sections beside a checkpoints/ folder (in
  workdir, or in one of its fold_K / seed_K runs)."""
  def one_run(folder: str) -> bool:
    try:
      with open(os.path.join(folder, 'config.json')) as f:
        config = json.load(f)
    except (OSError, ValueError):
      return False
    return (isinstance(config, dict) and all(isinstance(config.get(k), dict) for k in _LEGACY_CONFIG_KEYS) and
            os.path.isdir(os.path.join(folder, 'checkpoints')))

  if one_run(workdir):
    return True
  runs = [name for name in os.listdir(workdir) if name.startswith(('fold_', 'seed_'))]
  return any(one_run(os.path.join(workdir, name)) for name in runs)


def claim(workdir: str) -> None:
  """Makes workdir a lungjax run folder, or raises ForeignFolderError naming it (see the module docstring).

  A missing or empty folder gets the run marker; a legacy run (see is_legacy_run) gets it too, with a log line.
  """
  marker = os.path.join(workdir, RUN_MARKER)
  if os.path.isfile(marker):
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ForeignFolderError(f'--workdir={workdir!r} is a file, not a folder')
  entries = sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []
  if entries and not is_legacy_run(workdir):
    shown = ', '.join(entries[:5]) + (f' ... ({len(entries)} entries)' if len(entries) > 5 else '')
    raise ForeignFolderError(
        f'--workdir={workdir!r} is a non-empty folder that is not a lungjax run (no {RUN_MARKER} file; it holds '
        f'{shown}): lungjax would overwrite its files. Pass a new or empty folder, or a workdir lungjax trained in')
  os.makedirs(workdir, exist_ok=True)
  with open(marker, 'w') as f:
    json.dump({'written_by': _WRITER, 'created': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
               'adopted_from_an_older_version': bool(entries)}, f)
    f.write('\n')
  if entries:
    logging.warning('%s: a run of an older lungjax version (its config.json and checkpoints/): marked as a lungjax '
                    'run', workdir)


def _read_holder(path: str) -> dict[str, Any]:
  """The pid/host/started a lock file names ({} when it is empty or unreadable)."""
  try:
    with open(path) as f:
      holder = json.load(f)
    return holder if isinstance(holder, dict) else {}
  except (OSError, ValueError):
    return {}


def _describe(holder: dict[str, Any]) -> str:
  return (f'process {holder.get("pid", "?")} on host {holder.get("host", "?")} '
          f'(since {holder.get("started", "?")})')


def pid_alive(pid: Any) -> bool:
  """Whether a process with this id runs on this host (one of another user counts as alive)."""
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _lock_unsupported(error: OSError) -> bool:
  return error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def acquire_lock(workdir: str) -> int:
  """Takes WORKDIR/.lock and writes this process's pid and host into it; returns the open file descriptor.

  Raises WorkdirBusyError naming the holder when another process has it. A lock file whose process ended without
  removing it (killed) is taken over with a warning. On a filesystem without flock the file's pid decides: a live
  process on this host, or any process on another host, holds it.
  """
  path = os.path.join(workdir, LOCK)
  host = socket.gethostname()
  for _ in range(5):  # The holder may remove the file between our open and flock: then open it again.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    kernel_lock = True
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise WorkdirBusyError(
          f'--workdir={workdir!r} is in use by {_describe(_read_holder(path))}: {path} is locked. Wait for that '
          'run to end, or stop it, or pass another --workdir') from None
    except OSError as error:
      if not _lock_unsupported(error):
        os.close(fd)
        raise
      kernel_lock = False
      logging.warning('%s: this filesystem cannot flock (%s); the lock relies on the pid in the file', path, error)
    try:
      same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
      same_file = False
    if not same_file:
      os.close(fd)
      continue
    previous = _read_holder(path)
    if previous:
      alive = previous.get('host') != host or pid_alive(previous.get('pid'))
      if not kernel_lock and alive:
        os.close(fd)
        raise WorkdirBusyError(f'--workdir={workdir!r} is in use by {_describe(previous)} ({path} names it); '
                               'delete that file if that process is gone')
      logging.warning('%s: took over the lock left by %s, which no longer holds it (killed?)', path,
                      _describe(previous))
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({'pid': os.getpid(), 'host': host,
                             'started': time.strftime('%Y-%m-%dT%H:%M:%S%z')}).encode() + b'\n')
    os.fsync(fd)
    return fd
  raise WorkdirBusyError(f'--workdir={workdir!r}: {path} kept changing while it was locked; another run is starting')


def release_lock(workdir: str, fd: int) -> None:
  """Removes WORKDIR/.lock (if it is still this process's) and releases it."""
  path = os.path.join(workdir, LOCK)
  try:
    if os.fstat(fd).st_ino == os.stat(path).st_ino:
      os.unlink(path)
  except FileNotFoundError:
    pass
  finally:
    os.close(fd)


@contextlib.contextmanager
def owned(workdir: str) -> Iterator[None]:
  """For a training run: claims workdir (see claim) and holds its lock until the block ends (process 0 only)."""
  if not distributed.is_main_process():
    yield
    return
  claim(workdir)
  fd = acquire_lock(workdir)
  try:
    yield
  finally:
    release_lock(workdir, fd)


# ---- output files beside other people's files --------------------------------------------------------------------


def _read_manifest(folder: str) -> set[str]:
  """The relative paths the folder's manifest lists (none when there is no manifest)."""
  path = os.path.join(folder, MANIFEST)
  if not os.path.lexists(path):
    return set()
  try:
    with open(path) as f:
      manifest = json.load(f)
    files = manifest['files']
    if manifest.get('written_by') != _WRITER or not isinstance(files, list):
      raise ValueError('not a lungjax manifest')
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise ForeignFileError(f'{path!r} is not a manifest lungjax can read ({error}): lungjax keeps the list of files '
                           f'it wrote in {folder!r} there; move that file away') from error
  return set(files)


def claim_outputs(folder: str, relative_paths: Iterable[str], inputs: Iterable[str] = ()) -> list[str]:
  """Checks and records, before anything is written, that lungjax may write these files under `folder`.

  Raises ForeignFileError naming the first path that is one of `inputs`, or that exists and is not in the
  folder's manifest (lungjax did not write it); ValueError when two of them are the same file. Then adds them to
  the manifest and returns their full paths. Only process 0 records (and writes the files).
  """
  relative_paths = [os.path.normpath(p) for p in relative_paths]
  paths = [os.path.join(folder, p) for p in relative_paths]
  input_files = {os.path.realpath(p) for p in inputs}
  seen: dict[str, str] = {}
  listed = _read_manifest(folder)
  for relative, path in zip(relative_paths, paths):
    real = os.path.realpath(path)
    if real in seen:
      raise ValueError(f'two outputs would be the same file {path!r} ({seen[real]!r} and {relative!r})')
    seen[real] = relative
    if real in input_files:
      raise ForeignFileError(f'{path!r} is one of the input images: lungjax never writes over an input; choose '
                             'another output folder')
    if os.path.lexists(path) and (relative not in listed or os.path.islink(path) or not os.path.isfile(path)):
      raise ForeignFileError(f'{path!r} exists and lungjax did not write it (it is not in {MANIFEST} there): '
                             'lungjax never overwrites it; move it away or choose another output folder')
  if distributed.is_main_process():
    os.makedirs(folder, exist_ok=True)
    manifest = os.path.join(folder, MANIFEST)
    partial = f'{manifest}.tmp-{os.getpid()}'
    with open(partial, 'w') as f:
      json.dump({'written_by': _WRITER, 'files': sorted(listed | set(relative_paths))}, f, indent=0)
      f.write('\n')
    os.replace(partial, manifest)
  return paths


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file beside it and os.replace: a reader sees the old file or the new
  one, never half of one. Refuses a symbolic link at `path` (lungjax never writes through links); the temporary is
  created exclusively and without following links, and removed if the write fails."""
  if os.path.islink(path):
    raise FileExistsError(f'{path} is a symbolic link: lungjax does not write through links')
  temporary = f'{path}.tmp-{os.getpid()}'
  fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0), 0o644)
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(text)
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise
