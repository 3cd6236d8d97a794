"""Scan an image-folder root (one sub-folder per class) into records, with clear errors."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')


@dataclasses.dataclass(frozen=True)
class Record:
  """One image file and its class index in the configured class order."""

  path: str
  label: int


@dataclasses.dataclass(frozen=True)
class FolderScan:
  """The records of one split folder and the files in it that are not images."""

  records: tuple[Record, ...]
  ignored_files: tuple[str, ...]

  def class_counts(self, num_classes: int) -> list[int]:
    """Returns the number of records of each class."""
    counts = [0] * num_classes
    for record in self.records:
      counts[record.label] += 1
    return counts


def is_image_file(name: str) -> bool:
  """True for the extensions lungjax reads (.jpg, .jpeg, .png in any letter case)."""
  return name.lower().endswith(IMAGE_EXTENSIONS)


def parse_folder_names(text: str, classes: Sequence[str]) -> dict[str, str]:
  """Parses config.eval.class_names, 'FOLDER=Class,FOLDER=Class', into {folder name: class name}."""
  mapping = {}
  for item in filter(None, (part.strip() for part in text.split(','))):
    folder, sep, class_name = (x.strip() for x in item.partition('='))
    if not sep or class_name not in classes:
      raise ValueError(f'config.eval.class_names: {item!r} must read FOLDER=CLASS with CLASS one of {list(classes)}')
    mapping[folder] = class_name
  return mapping


def scan_split(
    split_dir: str,
    classes: Sequence[str],
    *,
    require_all_classes: bool = True,
    folder_names: Mapping[str, str] | None = None,
) -> FolderScan:
  """Lists the images of `split_dir/<class>/`; files that are not images are returned as ignored.

  `folder_names` maps other folder names onto classes (e.g. {'COVID': 'Covid'}); several folders may map to one
  class. Raises FileNotFoundError for a missing folder, ValueError for a class folder that is not in `classes`
  (nor mapped), and (with `require_all_classes`) for a missing or empty class folder.
  """
  if not os.path.isdir(split_dir):
    raise FileNotFoundError(f'image folder not found: {split_dir!r}')
  folder_names = dict(folder_names or {})
  sub_folders = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith('.'))
  unknown = [name for name in sub_folders if name not in classes and name not in folder_names]
  if unknown:
    raise ValueError(
        f'{split_dir!r} has class folders {unknown} that are not in config.data.classes {list(classes)}; '
        'rename them, add them to config.data.classes, or map them with config.eval.class_names=FOLDER=CLASS,...')
  records, ignored = [], []
  folders_of_class = {c: [c] if c not in folder_names else [] for c in classes}
  for folder, class_name in folder_names.items():
    folders_of_class[class_name].append(folder)
  for label, class_name in enumerate(classes):
    class_dirs = [os.path.join(split_dir, name) for name in folders_of_class[class_name]]
    class_dirs = [d for d in class_dirs if os.path.isdir(d)] or class_dirs[:1]
    for class_dir in class_dirs:
      _scan_class_dir(class_dir, class_name, label, require_all_classes, records, ignored)
  if not records:
    raise ValueError(f'no .jpg/.jpeg/.png images under {split_dir!r} for classes {list(classes)}')
  return FolderScan(tuple(records), tuple(ignored))


def _scan_class_dir(class_dir: str, class_name: str, label: int, require_all_classes: bool, records: list,
                    ignored: list) -> None:
  """Appends one class folder's images to records and its other files to ignored."""
  if not os.path.isdir(class_dir):
    if require_all_classes:
      raise FileNotFoundError(f'class folder missing: {class_dir!r} (config.data.classes lists {class_name!r})')
    return
  n_before = len(records)
  for entry in sorted(os.scandir(class_dir), key=lambda e: e.name):
    if entry.is_dir() or entry.name.startswith('.'):
      ignored.append(entry.path)
    elif is_image_file(entry.name):
      records.append(Record(entry.path, label))
    else:
      ignored.append(entry.path)
  if require_all_classes and len(records) == n_before:
    raise ValueError(f'class folder has no .jpg/.jpeg/.png images: {class_dir!r}')
