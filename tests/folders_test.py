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


def _folder_with_bad_links(tmp_path) -> str:
  """Three class folders of decodable PNGs; Covid also holds a dangling link and a link loop named like images."""
  from tests.conftest import write_image_folder  # pylint: disable=import-outside-toplevel
  root = write_image_folder(str(tmp_path / 'train'), 4, seed=3)
  os.symlink(str(tmp_path / 'gone.png'), os.path.join(root, 'Covid', 'dangling.png'))
  os.symlink('loop.png', os.path.join(root, 'Covid', 'loop.png'))  # Points at itself: ELOOP.
  return root


def test_dangling_links_and_loops_are_named_or_skipped_and_counted(tmp_path):
  root = _folder_with_bad_links(tmp_path)
  with pytest.raises(folders.UnreadableError, match=r"dangling.png.*dangling symbolic link.*1 more.*skip_bad_images"):
    folders.scan_split(root, CLASSES)
  scan = folders.scan_split(root, CLASSES, skip_unreadable=True)
  assert scan.class_counts(3) == [4, 4, 4]
  assert [(os.path.basename(p), reason.split(' (')[0]) for p, reason in scan.unreadable] == [
      ('dangling.png', 'a dangling symbolic link'), ('loop.png', 'a symbolic link loop')]


def test_training_with_skip_bad_images_counts_the_bad_links_and_without_names_them(tmp_path, tiny_config):
  from lungjax.data import loading  # pylint: disable=import-outside-toplevel
  root = _folder_with_bad_links(tmp_path)
  tiny_config.data.skip_bad_images = True
  loaded = loading.load_folder(root, tiny_config, require_all_classes=True)
  assert len(loaded.decoded) == 12
  skipped = {os.path.basename(path): reason for path, reason in loaded.skipped_report()}
  assert set(skipped) == {'dangling.png', 'loop.png'} and 'symbolic link' in skipped['loop.png']
  tiny_config.data.skip_bad_images = False
  with pytest.raises(folders.UnreadableError, match='dangling.png'):
    loading.load_folder(root, tiny_config, require_all_classes=True)


def test_an_unreadable_file_is_named_or_skipped(tmp_path, monkeypatch):
  """Root reads chmod-000 files, and the tests run as root: os.access is made to say no for one file."""
  _touch(str(tmp_path / 'Covid' / 'a.png'))
  _touch(str(tmp_path / 'Covid' / 'secret.png'))
  real_access = os.access
  monkeypatch.setattr(os, 'access', lambda path, mode, **kw: 'secret' not in str(path) and real_access(path, mode))
  with pytest.raises(folders.UnreadableError, match='secret.png.*no permission'):
    folders.scan_split(str(tmp_path), CLASSES, require_all_classes=False)
  scan = folders.scan_split(str(tmp_path), CLASSES, require_all_classes=False, skip_unreadable=True)
  assert [os.path.basename(r.path) for r in scan.records] == ['a.png']
  assert [(os.path.basename(p), r) for p, r in scan.unreadable] == [('secret.png', 'no permission to read it')]


def test_an_unlistable_class_folder_is_named_or_skipped(tmp_path, monkeypatch):
  """A class folder that cannot be listed (chmod 000, simulated: root lists it anyway) is never silently empty."""
  _touch(str(tmp_path / 'Covid' / 'a.png'))
  _touch(str(tmp_path / 'Normal' / 'b.png'))
  real_scandir = os.scandir

  def scandir(path='.'):
    if os.path.basename(str(path)) == 'Normal':
      raise PermissionError(13, 'Permission denied', str(path))
    return real_scandir(path)

  monkeypatch.setattr(os, 'scandir', scandir)
  with pytest.raises(folders.UnreadableError, match='Normal.*cannot list the class folder'):
    folders.scan_split(str(tmp_path), CLASSES, require_all_classes=False)
  scan = folders.scan_split(str(tmp_path), CLASSES, require_all_classes=False, skip_unreadable=True)
  assert [os.path.basename(r.path) for r in scan.records] == ['a.png']
  assert [os.path.basename(p) for p, _ in scan.unreadable] == ['Normal']


@pytest.mark.skipif(os.geteuid() == 0, reason='root reads chmod-000 files; the os.access test above simulates it')
def test_a_chmod_000_file_is_unreadable(tmp_path):
  _touch(str(tmp_path / 'Covid' / 'a.png'))
  os.chmod(tmp_path / 'Covid' / 'a.png', 0)
  assert folders.file_problem(str(tmp_path / 'Covid' / 'a.png')) == 'no permission to read it'
