"""Scan an image-folder root (one sub-folder per class) into records, with clear errors."""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Mapping, Sequence

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.dcm', '.dicom')  # DICOM needs pydicom (lungjax[dicom]).


@dataclasses.dataclass(frozen=True)
class Record:
  """One image file and its class index in the configured class order."""

  path: str
  label: int


class UnreadableError(OSError):
  """An image file or class folder that the file system will not let lungjax read; the message names it."""

  def __init__(self, path: str, reason: str, hint: str = ''):
    super().__init__(f'cannot read {path!r}: {reason}{hint}')
    self.path = path
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class FolderScan:
  """The records of one split folder, the files in it that are not images, and the paths it could not read."""

  records: tuple[Record, ...]
  ignored_files: tuple[str, ...]
  unreadable: tuple[tuple[str, str], ...] = ()  # (path, reason) of each image file or class folder skipped.

  def class_counts(self, num_classes: int) -> list[int]:
    """Returns the number of records of each class."""
    counts = [0] * num_classes
    for record in self.records:
      counts[record.label] += 1
    return counts


def is_image_file(name: str) -> bool:
  """True for the extensions lungjax reads (.jpg, .jpeg, .png, .dcm, .dicom in any letter case)."""
  return name.lower().endswith(IMAGE_EXTENSIONS)


def file_problem(path: str) -> str | None:
  """Why `path` cannot be read as an image file, or None: a dangling symbolic link, a link loop, something that is
  not a regular file (a folder, a FIFO, a device: reading those would fail or block) or no permission to read it."""
  try:
    mode = os.stat(path).st_mode  # Follows symbolic links.
  except OSError as error:
    if error.errno == errno.ENOENT and os.path.islink(path):
      try:
        return f'a dangling symbolic link (its target {os.readlink(path)!r} does not exist)'
      except OSError:
        return 'a dangling symbolic link'
    if error.errno == errno.ELOOP:
      return 'a symbolic link loop'
    return error.strerror or type(error).__name__
  if not stat.S_ISREG(mode):
    if stat.S_ISDIR(mode):
      return 'a folder, not a file'
    kind = ('a FIFO (named pipe)' if stat.S_ISFIFO(mode) else 'a socket' if stat.S_ISSOCK(mode) else
            'a device' if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else 'something')
    return f'{kind}, not a regular file'
  if not os.access(path, os.R_OK):
    return 'no permission to read it'
  return None


def _is_dir(entry: os.DirEntry) -> bool:
  """entry.is_dir(), False for an entry whose target cannot be examined (a link loop: it raises ELOOP)."""
  try:
    return entry.is_dir()
  except OSError:
    return False


def parse_folder_names(text: str, classes: Sequence[str], field: str = 'config.eval.class_names') -> dict[str, str]:
  """Parses config.eval.class_names (or `field`), 'FOLDER=Class,FOLDER=Class', into {folder name: class name}."""
  mapping = {}
  for item in filter(None, (part.strip() for part in text.split(','))):
    folder, sep, class_name = (x.strip() for x in item.partition('='))
    if not sep or class_name not in classes:
      raise ValueError(f'{field}: {item!r} must read FOLDER=CLASS with CLASS one of {list(classes)}')
    mapping[folder] = class_name
  return mapping


def scan_split(
    split_dir: str,
    classes: Sequence[str],
    *,
    require_all_classes: bool = True,
    folder_names: Mapping[str, str] | None = None,
    skip_unreadable: bool = False,
) -> FolderScan:
  """Lists the images of `split_dir/<class>/`; files that are not images are returned as ignored.

  `folder_names` maps other folder names onto classes (e.g. {'COVID': 'Covid'}); several folders may map to one
  class. Raises FileNotFoundError for a missing folder, ValueError for a class folder that is not in `classes`
  (nor mapped), and (with `require_all_classes`) for a missing or empty class folder.

  An image file that cannot be read (see file_problem) or a class folder that cannot be listed raises
  UnreadableError naming it; with `skip_unreadable` (config.data.skip_bad_images) it is left out and listed, with
  the reason, in the scan's `unreadable`.
  """
  if not os.path.isdir(split_dir):
    raise FileNotFoundError(f'image folder not found: {split_dir!r}')
  folder_names = dict(folder_names or {})
  try:
    with os.scandir(split_dir) as entries:
      sub_folders = sorted(e.name for e in entries if _is_dir(e) and not e.name.startswith('.'))
  except OSError as error:
    raise UnreadableError(split_dir, f'cannot list the folder ({error.strerror or error})') from error
  unknown = [name for name in sub_folders if name not in classes and name not in folder_names]
  if unknown:
    raise ValueError(
        f'{split_dir!r} has class folders {unknown} that are not in config.data.classes {list(classes)}; '
        'rename them, add them to config.data.classes, or map them with config.eval.class_names=FOLDER=CLASS,...')
  records, ignored, unreadable = [], [], []
  folders_of_class = {c: [c] if c not in folder_names else [] for c in classes}
  for folder, class_name in folder_names.items():
    folders_of_class[class_name].append(folder)
  for label, class_name in enumerate(classes):
    class_dirs = [os.path.join(split_dir, name) for name in folders_of_class[class_name]]
    class_dirs = [d for d in class_dirs if os.path.isdir(d)] or class_dirs[:1]
    for class_dir in class_dirs:
      _scan_class_dir(class_dir, class_name, label, require_all_classes, records, ignored, unreadable)
  if unreadable and not skip_unreadable:
    path, reason = unreadable[0]
    more = f'; {len(unreadable) - 1} more unreadable paths' if len(unreadable) > 1 else ''
    raise UnreadableError(path, reason, f'{more} (set config.data.skip_bad_images=True to skip them)')
  if not records:
    raise ValueError(f'no .jpg/.jpeg/.png images under {split_dir!r} for classes {list(classes)}')
  return FolderScan(tuple(records), tuple(ignored), tuple(unreadable))


def _scan_class_dir(class_dir: str, class_name: str, label: int, require_all_classes: bool, records: list,
                    ignored: list, unreadable: list) -> None:
  """Appends one class folder's images to records, its other files to ignored, and what it cannot read (the
  folder itself, or image files) to unreadable as (path, reason)."""
  if not os.path.isdir(class_dir):
    if require_all_classes:
      raise FileNotFoundError(f'class folder missing: {class_dir!r} (config.data.classes lists {class_name!r})')
    return
  try:
    with os.scandir(class_dir) as listing:
      entries = sorted(listing, key=lambda e: e.name)
  except OSError as error:
    unreadable.append((class_dir, f'cannot list the class folder ({error.strerror or error})'))
    return
  n_before, n_unreadable_before = len(records), len(unreadable)
  for entry in entries:
    if entry.name.startswith('.') or _is_dir(entry):
      ignored.append(entry.path)
    elif is_image_file(entry.name):
      problem = file_problem(entry.path)
      if problem:
        unreadable.append((entry.path, problem))
      else:
        records.append(Record(entry.path, label))
    else:
      ignored.append(entry.path)
  if require_all_classes and len(records) == n_before and len(unreadable) == n_unreadable_before:
    raise ValueError(f'class folder has no .jpg/.jpeg/.png images: {class_dir!r}')
