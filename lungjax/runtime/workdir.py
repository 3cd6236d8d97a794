"""Who owns a folder lungjax writes to: the run marker and lock of a workdir, and safe output paths.

lungjax never overwrites a file it did not write:

- A training run claims its workdir: a missing or empty folder gets the run marker `.lungjax-run`; a folder with
  the marker, or one an older lungjax trained in (its config.json beside checkpoints/), is a run and may be resumed;
  any other non-empty folder is refused (ForeignFolderError names it).
- A training run holds `WORKDIR/.lock` (an exclusive flock, and the holder's pid and host in the file) until it
  ends: a second run on the same workdir fails at once (WorkdirBusyError names the holder). The kernel drops the
  lock of a process that died; its leftover file is taken over with a warning.
- Every file lungjax writes goes through write_bytes (see 'every file lungjax writes' below): atomic, never through
  a symbolic link, never outside its output folder, never over a file lungjax did not write (the folder's
  manifest, `.lungjax-outputs.json`, lists the files lungjax wrote there; ForeignFileError names a foreign one).

Multi-host runs: only process 0 claims, locks and writes (the others compute).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import pathlib
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from absl import logging

from lungjax.runtime import distributed

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
               'adopted_from_an_older_version': bool(entries), 'manifests': not entries}, f)
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


# ---- a report folder named by the folder it reports on (issue 26 High 2) -------------------------------------


def folder_identity(folders: Sequence[str]) -> str:
  """The name of the output folder for a report on these input folders: their base names joined by '+' and the
  first 8 hex digits of the sha256 of their resolved paths ('test-1a2b3c4d'). Two folders of the same base name
  (/a/test, /b/test) get different names, so neither report replaces the other; the same folder, however it is
  spelled (a relative path, a trailing slash, a link to it), gets the same one."""
  kept = [f.strip() for f in folders if f.strip()]
  if not kept:
    raise ValueError('folder_identity needs at least one folder')
  resolved = [os.path.realpath(f) for f in kept]
  digest = hashlib.sha256('\n'.join(resolved).encode('utf-8', 'surrogateescape')).hexdigest()[:8]
  return '+'.join(os.path.basename(os.path.normpath(f)) for f in kept) + '-' + digest


def legacy_folder_name(folders: Sequence[str]) -> str:
  """The name an output folder had before folder_identity (base names only): readers still find those."""
  return '+'.join(os.path.basename(os.path.normpath(f.strip())) for f in folders if f.strip())


# ---- a replaced run's reports (issue 26 Low 3) ---------------------------------------------------------------

REPORT_FOLDERS = ('eval', 'explain', 'shortcuts', 'compare')  # WORKDIR/<kind>/<name>/: reports on one checkpoint.
_OLD_RUN_FILES = ('calibration.json',)  # Fitted for the old run's checkpoint: never served with a new one.


def set_aside_reports(workdir: str, aside: str) -> list[str]:
  """Moves the reports of a replaced run (on_mismatch=fresh) out of workdir into `aside`, keeping their paths
  ('eval/folder-x-1a2b3c4d' → aside/eval/folder-x-1a2b3c4d), so none is read as the new run's: every folder of
  REPORT_FOLDERS lungjax wrote (its manifest or completion marker says so) and the old calibration.json. A folder
  lungjax did not write is left where it is, with a warning. Returns the moved paths (relative to workdir)."""
  moved = []
  if not distributed.is_main_process():
    return moved
  for kind in REPORT_FOLDERS:
    parent = os.path.join(workdir, kind)
    if not os.path.isdir(parent) or os.path.islink(parent):
      continue
    for name in sorted(os.listdir(parent)):
      folder = os.path.join(parent, name)
      if os.path.islink(folder) or not os.path.isdir(folder):
        continue
      if not (os.path.isfile(os.path.join(folder, MANIFEST)) or os.path.isfile(os.path.join(folder, COMPLETE))):
        logging.warning('%s: not set aside with the replaced run (lungjax did not write it: no %s)', folder,
                        MANIFEST)
        continue
      os.makedirs(os.path.join(aside, kind), exist_ok=True)
      os.replace(folder, os.path.join(aside, kind, name))  # A rename: the folder moves whole, or not at all.
      moved.append(os.path.join(kind, name))
  for name in _OLD_RUN_FILES:
    path = os.path.join(workdir, name)
    if os.path.isfile(path) and not os.path.islink(path) and name in _read_manifest(workdir):
      os.makedirs(aside, exist_ok=True)
      os.replace(path, os.path.join(aside, name))
      moved.append(name)
  if moved:
    logging.warning('set the replaced run\'s reports aside in %s: %s', aside, ', '.join(moved))
  return moved


# ---- a folder's files as one unit (issue 26 High 3) --------------------------------------------------------------
#
# A report folder (eval/<name>, explain/<name>, shortcuts/<name>, a compare --out, the run's final outputs) is one
# unit: begin_unit marks it incomplete (FOLDER/.complete says "complete": false) before its first file is written,
# finish_unit writes the marker last, with the sha256 of every file of the unit. A reader (check_unit) that finds the
# marker incomplete, or a file of the unit missing or changed, raises IncompleteFolderError naming the folder and the
# files: a kill -9 midway, or a half-rewritten folder, is never read as a whole report. A folder without a marker was
# written by a lungjax older than markers: check_unit says so (a warning) and returns False.

COMPLETE = '.complete'


class IncompleteFolderError(RuntimeError):
  """A folder's files were not all written by one run (killed midway, or changed since): the message names them."""


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def begin_unit(folder: str, *, root: str | None = None) -> str:
  """Marks folder incomplete (its .complete says so) before its files are written; returns the marker's path."""
  os.makedirs(folder, exist_ok=True)
  return write_json(os.path.join(folder, COMPLETE), {
      'written_by': _WRITER, 'complete': False, 'pid': os.getpid(),
      'started': time.strftime('%Y-%m-%dT%H:%M:%S%z')}, root=root)


def finish_unit(folder: str, names: Iterable[str], *, root: str | None = None) -> str:
  """Writes folder's completion marker last: the sha256 of each named file (relative to folder), which must exist."""
  files = {}
  for name in sorted(set(names)):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
      raise IncompleteFolderError(f'{folder}: {name} was not written, so the folder is not marked complete')
    files[name] = _sha256(path)
  return write_json(os.path.join(folder, COMPLETE), {
      'written_by': _WRITER, 'complete': True, 'files': files,
      'finished': time.strftime('%Y-%m-%dT%H:%M:%S%z')}, root=root)


def unit_problems(folder: str) -> list[str] | None:
  """What is wrong with folder as a unit ([] when whole); None where it has no marker (an older lungjax's folder)."""
  marker = os.path.join(folder, COMPLETE)
  if not os.path.lexists(marker):
    return None
  if os.path.islink(marker) or not os.path.isfile(marker):
    return [f'{COMPLETE} is not a regular file']
  try:
    record = read_json(marker)
  except CorruptFileError as error:
    return [str(error)]
  if not isinstance(record, dict) or record.get('written_by') != _WRITER:
    return [f'{COMPLETE} is not a lungjax completion marker']
  if record.get('complete') is not True:
    return [f'its writer (process {record.get("pid", "?")}, started {record.get("started", "?")}) stopped before '
            'finishing it (killed, or still running): some files may be from an earlier run, some missing']
  problems = []
  for name, digest in sorted(record.get('files', {}).items()):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
      problems.append(f'{name} is missing')
    elif _sha256(path) != digest:
      problems.append(f'{name} changed after the folder was completed')
  return problems


def check_unit(folder: str, what: str = 'folder') -> bool:
  """True when folder's completion marker vouches for its files; False (with a warning) when it has none (written by
  a lungjax older than completion markers); IncompleteFolderError naming the folder and its files otherwise."""
  problems = unit_problems(folder)
  if problems is None:
    logging.warning('%s %s has no %s marker (written by a lungjax older than completion markers, or never '
                    'finished by one): not checked for completeness', what, folder, COMPLETE)
    return False
  if problems:
    raise IncompleteFolderError(f'{what} {folder} is incomplete: ' + '; '.join(problems) +
                                '. Rerun the command that writes it')
  return True


# ---- every file lungjax writes ----------------------------------------------------------------------------------
#
# One rule, one helper (write_bytes; write_text, write_json, write_figure, write_image wrap it). A file is written
# under an output folder `root` (its own folder unless the caller names one):
# - it lands inside root, reached through no symbolic link below root (a link there lungjax did not make would send
#   it elsewhere), and is never a link itself nor anything but a regular file;
# - it is never written over a file lungjax did not write: root's manifest (.lungjax-outputs.json) lists the files
#   lungjax wrote there. A name is claimed ('pending') before its file is written and listed ('files') only after
#   the file is whole; an existing file listed in neither is foreign (ForeignFileError names it). The first manifest
#   of a folder inside a lungjax run that a lungjax older than manifests wrote (its .lungjax-run marker does not say
#   "manifests": true) adopts the regular files already there: that run's folder is lungjax's;
# - it is written as one unit: a temporary file beside it (created exclusively, never following a link), fsync,
#   os.replace. A reader, or a process killed midway, sees the old file or the new one, never half of one.
# read_json reads what these wrote: a file that is not valid JSON is CorruptFileError naming the file.

_ADOPT_LEVELS = 3  # How far above root a lungjax run's marker makes root part of the run.
_NOT_ADOPTED = ('checkpoints',)  # Orbax's folders: never files of this helper.


class CorruptFileError(ValueError):
  """A JSON file lungjax reads (model_card.json, metrics.json, config.json ...) is not valid: the message names it."""


def read_json(path: str) -> Any:
  """The JSON value in `path`; CorruptFileError naming the file when it is not valid JSON (cut short, edited)."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    return json.loads(data)
  except ValueError as error:
    raise CorruptFileError(f'{path} is not valid JSON ({error}; {len(data)} bytes): it was cut short or edited. '
                           'Move it away (lungjax writes it again), or restore it') from None


def _in_run_without_manifests(folder: str) -> bool:
  """Whether folder is inside a lungjax run whose files an older lungjax (before manifests) may have written: its
  run marker does not say `"manifests": true`. A run this lungjax started keeps a manifest from its first file on,
  so a file it does not list there is foreign, even in a folder it has not written yet."""
  current = os.path.abspath(folder)
  for _ in range(_ADOPT_LEVELS + 1):
    marker = os.path.join(current, RUN_MARKER)
    if os.path.isfile(marker):
      try:
        with open(marker) as f:
          return json.load(f).get('manifests') is not True
      except (OSError, ValueError, AttributeError):
        return True
    current = os.path.dirname(current)
  return False


def _read_manifest_record(folder: str) -> dict[str, set[str]] | None:
  """{'files', 'pending'} of folder's manifest; None where it has none. ForeignFileError for one lungjax can't read."""
  path = os.path.join(folder, MANIFEST)
  if not os.path.lexists(path):
    return None
  try:
    if os.path.islink(path):
      raise ValueError('a symbolic link')
    with open(path) as f:
      manifest = json.load(f)
    files, pending = manifest['files'], manifest.get('pending', [])
    if manifest.get('written_by') != _WRITER or not isinstance(files, list) or not isinstance(pending, list):
      raise ValueError('not a lungjax manifest')
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
    raise ForeignFileError(f'{path!r} is not a manifest lungjax can read ({error}): lungjax keeps the list of files '
                           f'it wrote in {folder!r} there; move that file away') from error
  return {'files': set(files), 'pending': set(pending)}


def _read_manifest(folder: str) -> set[str]:
  """The relative paths the folder's manifest lists, written or claimed (none when there is no manifest)."""
  record = _read_manifest_record(folder)
  return set() if record is None else record['files'] | record['pending']


def _adopted(folder: str) -> set[str]:
  """The regular files under a lungjax run's folder (relative paths; orbax's checkpoints/ and dot-files aside)."""
  found = set()
  for parent, dirs, names in os.walk(folder):
    dirs[:] = [d for d in dirs if d not in _NOT_ADOPTED and not d.startswith('.')]
    for name in names:
      path = os.path.join(parent, name)
      if not name.startswith('.') and os.path.isfile(path) and not os.path.islink(path):
        found.add(os.path.relpath(path, folder))
  return found


def _write_temporary(path: str, data: bytes) -> str:
  """data in a new, fsynced temporary file beside path (created exclusively, never following a link); its path."""
  folder, name = os.path.split(os.path.abspath(path))
  temporary = os.path.join(folder, f'.{name}.tmp-{os.getpid()}-{os.urandom(4).hex()}')
  fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
  except BaseException:  # A full disk midway: no half temporary file left behind.
    with contextlib.suppress(OSError):
      os.unlink(temporary)
    raise
  return temporary


def _replace_atomically(path: str, data: bytes) -> None:
  """Writes data to a new temporary file beside path (exclusive, never following a link), fsyncs, renames it."""
  temporary = _write_temporary(path, data)
  try:
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(temporary)
    raise


def _link_new(path: str, data: bytes) -> None:
  """Writes a whole temporary file and hard-links it at path: FileExistsError when anything is there already."""
  temporary = _write_temporary(path, data)
  try:
    os.link(temporary, path, follow_symlinks=False)
  except FileExistsError as error:
    raise FileExistsError(f'{path!r} already exists: lungjax writes only a new file there and never overwrites '
                          'one') from error
  finally:
    with contextlib.suppress(OSError):
      os.unlink(temporary)


def _write_manifest(folder: str, record: dict[str, set[str]]) -> None:
  _replace_atomically(os.path.join(folder, MANIFEST), (json.dumps(
      {'written_by': _WRITER, 'files': sorted(record['files']), 'pending': sorted(record['pending'] - record['files'])},
      indent=0) + '\n').encode())


def relative_inside(path: str, root: str) -> str:
  """path relative to root; ForeignFileError unless it is inside root, through no symbolic link below root, and
  resolves inside root (Medium 4: '..' or a planted link never sends an output elsewhere)."""
  relative = os.path.normpath(os.path.relpath(os.path.abspath(path), os.path.abspath(root)))
  if relative in (os.curdir, os.pardir) or relative.startswith(os.pardir + os.sep) or os.path.isabs(relative):
    raise ForeignFileError(f'{path!r} is outside the output folder {root!r}: lungjax writes only inside it')
  current = os.path.abspath(root)
  for part in relative.split(os.sep)[:-1]:
    current = os.path.join(current, part)
    if os.path.islink(current):
      raise ForeignFileError(f'{current!r} inside the output folder {root!r} is a symbolic link: lungjax does not '
                             'write through links it did not make')
    if os.path.lexists(current) and not os.path.isdir(current):
      raise ForeignFileError(f'{current!r} inside the output folder {root!r} is not a folder')
  parent = pathlib.Path(os.path.realpath(os.path.dirname(os.path.abspath(path))))
  if os.path.exists(parent) and not parent.is_relative_to(os.path.realpath(root)):
    raise ForeignFileError(f'{path!r} resolves outside the output folder {root!r}')
  return relative


def make_folder(root: str, *parts: str) -> str:
  """root/parts..., created, reached through no symbolic link below root (relative_inside); returns its path."""
  folder = os.path.join(root, *parts)
  relative_inside(os.path.join(folder, 'x'), root)
  os.makedirs(folder, exist_ok=True)
  relative_inside(os.path.join(folder, 'x'), root)  # A link planted while it was made.
  return folder


@contextlib.contextmanager
def _manifest_of(root: str) -> Iterator[dict[str, set[str]]]:
  """root's manifest record under an exclusive lock of root (two writers take turns); written back afterwards."""
  os.makedirs(root, exist_ok=True)
  dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
  try:
    fcntl.flock(dir_fd, fcntl.LOCK_EX)
    record = _read_manifest_record(root)
    if record is None:
      record = {'files': _adopted(root) if _in_run_without_manifests(root) else set(), 'pending': set()}
    before = {k: set(v) for k, v in record.items()}
    yield record
    if record != before or not os.path.exists(os.path.join(root, MANIFEST)):
      _write_manifest(root, record)
  finally:
    os.close(dir_fd)


def _check_writable(path: str, relative: str, listed: set[str], input_files: set[str] = frozenset()) -> None:
  if os.path.realpath(path) in input_files:
    raise ForeignFileError(f'{path!r} is one of the input images: lungjax never writes over an input; choose '
                           'another output folder')
  if os.path.islink(path):
    raise ForeignFileError(f'{path!r} is a symbolic link lungjax did not make: lungjax never writes through a link; '
                           'remove it')
  if os.path.lexists(path) and not os.path.isfile(path):
    raise ForeignFileError(f'{path!r} exists and is not a regular file: lungjax writes nothing over it')
  if os.path.lexists(path) and relative not in listed:
    raise ForeignFileError(f'{path!r} exists and lungjax did not write it (it is not in {MANIFEST} there): '
                           'lungjax never overwrites it; move it away or choose another output folder')


def claim_outputs(folder: str, relative_paths: Iterable[str], inputs: Iterable[str] = ()) -> list[str]:
  """Checks, before anything is computed, that lungjax may write these files under `folder` (the rule above), and
  claims their names ('pending' in the manifest); returns their full paths.

  Raises ForeignFileError naming the first path that is one of `inputs`, outside folder or through a link, or that
  exists and is not lungjax's; ValueError when two of them are the same file. Only process 0 records.
  """
  relative_paths = [os.path.normpath(p) for p in relative_paths]
  paths = [os.path.join(folder, p) for p in relative_paths]
  input_files = {os.path.realpath(p) for p in inputs}
  seen: dict[str, str] = {}
  for relative, path in zip(relative_paths, paths):
    relative_inside(path, folder)
    real = os.path.realpath(path)
    if real in seen:
      raise ValueError(f'two outputs would be the same file {path!r} ({seen[real]!r} and {relative!r})')
    seen[real] = relative
  if not distributed.is_main_process():
    listed = _read_manifest(folder) if os.path.isdir(folder) else set()
    for relative, path in zip(relative_paths, paths):
      _check_writable(path, relative, listed, input_files)
    return paths
  with _manifest_of(folder) as record:
    for relative, path in zip(relative_paths, paths):
      _check_writable(path, relative, record['files'] | record['pending'], input_files)
    record['pending'] |= set(relative_paths) - record['files']
  return paths


def write_bytes(path: str, data: bytes, *, root: str | None = None, exclusive: bool = False) -> str:
  """Writes data to path under the output folder root (default: path's folder) by the rule above; returns path.

  ForeignFileError names a path lungjax may not write: outside root or through a link below it, a link, not a
  regular file, or a file lungjax did not write. exclusive: only a new file (audit --strip's copies): whatever is
  at path, lungjax's or not, is a FileExistsError naming it; such files need no manifest (nothing is replaced).
  """
  root = os.path.dirname(os.path.abspath(path)) if root is None else root
  relative = relative_inside(path, root)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  relative_inside(path, root)  # A link planted while the folders were made.
  if exclusive:
    _link_new(path, data)
    return path
  with _manifest_of(root) as record:
    _check_writable(path, relative, record['files'] | record['pending'])
    if relative not in record['files']:
      record['pending'].add(relative)  # Claimed before the file exists: a kill midway leaves nothing foreign.
  _replace_atomically(path, data)
  with _manifest_of(root) as record:  # Listed only once whole (Low 4).
    record['files'].add(relative)
    record['pending'].discard(relative)
  return path


def write_text(path: str, text: str, *, root: str | None = None) -> str:
  """write_bytes of text as UTF-8 (a file name that is not UTF-8, a surrogate escape, keeps its bytes)."""
  return write_bytes(path, text.encode('utf-8', 'surrogateescape'), root=root)


def write_json(path: str, value: Any, *, root: str | None = None, **dumps_kwargs: Any) -> str:
  """write_text of value as indented JSON (json.dumps' keyword arguments pass through)."""
  return write_text(path, json.dumps(value, **{'indent': 2, **dumps_kwargs}) + '\n', root=root)


def write_figure(path: str, fig: Any, *, root: str | None = None, **savefig_kwargs: Any) -> str:
  """A matplotlib figure rendered in memory (savefig's keyword arguments; PNG unless format= says) and write_bytes."""
  buffer = io.BytesIO()
  fig.savefig(buffer, **{'format': 'png', **savefig_kwargs})
  return write_bytes(path, buffer.getvalue(), root=root)


def write_image(path: str, image: Any, *, root: str | None = None, **save_kwargs: Any) -> str:
  """A PIL image encoded in memory (PNG unless format= says) and write_bytes."""
  buffer = io.BytesIO()
  image.save(buffer, **{'format': 'PNG', **save_kwargs})
  return write_bytes(path, buffer.getvalue(), root=root)


def write_atomic(path: str, text: str) -> None:
  """write_text into path's own folder (kept for its callers)."""
  write_text(path, text)
