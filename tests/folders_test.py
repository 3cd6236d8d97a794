"""Scanning image-folder roots: extensions, spaces, ignored files and clear errors."""

import os

import pytest

from lungjax.data import folders
from tests.conftest import CLASSES, needs_shared_data, SHARED_TRAIN


def _touch(path: str, data: bytes = b'x') -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)


def test_scan_reads_any_letter_case_and_spaces_and_lists_ignored(tmp_path):
  root = str(tmp_path / 'train')
  for name in ('a.JPG', 'b.jpeg', 'c.Png', 'notes.txt', '.DS_Store'):
    _touch(os.path.join(root, 'Viral Pneumonia', name))
  _touch(os.path.join(root, 'Covid', 'x.jpg'))
  _touch(os.path.join(root, 'Normal', 'y.png'))
  scan = folders.scan_split(root, CLASSES)
  assert [os.path.basename(r.path) for r in scan.records] == ['x.jpg', 'y.png', 'a.JPG', 'b.jpeg', 'c.Png']
  assert [r.label for r in scan.records] == [0, 1, 2, 2, 2]
  assert sorted(os.path.basename(p) for p in scan.ignored_files) == ['.DS_Store', 'notes.txt']
  assert scan.class_counts(3) == [1, 1, 3]


def test_missing_root_names_the_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match='nowhere'):
    folders.scan_split(str(tmp_path / 'nowhere'), CLASSES)


def test_unknown_class_folder_is_an_error(tmp_path):
  for name in (*CLASSES, 'Bacterial'):
    _touch(str(tmp_path / name / 'a.png'))
  with pytest.raises(ValueError, match="Bacterial"):
    folders.scan_split(str(tmp_path), CLASSES)


def test_empty_class_folder_is_an_error(tmp_path):
  for name in CLASSES[:2]:
    _touch(str(tmp_path / name / 'a.png'))
  (tmp_path / CLASSES[2]).mkdir()
  (tmp_path / CLASSES[2] / 'readme.txt').write_text('no images here')
  with pytest.raises(ValueError, match='Viral Pneumonia'):
    folders.scan_split(str(tmp_path), CLASSES)


def test_missing_class_folder_is_an_error_unless_allowed(tmp_path):
  _touch(str(tmp_path / 'Normal' / 'a.png'))
  with pytest.raises(FileNotFoundError, match='Covid'):
    folders.scan_split(str(tmp_path), CLASSES)
  scan = folders.scan_split(str(tmp_path), CLASSES, require_all_classes=False)
  assert [r.label for r in scan.records] == [1]


@needs_shared_data
def test_shared_train_has_the_documented_counts():
  scan = folders.scan_split(SHARED_TRAIN, CLASSES)
  assert scan.class_counts(3) == [111, 70, 70]
  assert not scan.ignored_files
