"""workdir.write_bytes, the one writer of every lungjax file: atomic, never through a link, never outside its output
folder, never over a file lungjax did not write (the manifest), listed only once whole."""

import json
import os

import pytest

from lungjax.runtime import workdir


def _manifest(folder):
  with open(os.path.join(folder, workdir.MANIFEST)) as f:
    return json.load(f)


def test_writes_whole_files_and_lists_them_in_the_manifest(tmp_path):
  out = tmp_path / 'out'
  workdir.write_json(str(out / 'a.json'), {'x': 1}, root=str(out))
  workdir.write_text(str(out / 'sub' / 'b.md'), 'first', root=str(out))
  workdir.write_text(str(out / 'sub' / 'b.md'), 'second', root=str(out))
  assert json.loads((out / 'a.json').read_text()) == {'x': 1}
  assert (out / 'sub' / 'b.md').read_text() == 'second'
  assert _manifest(out) == {'written_by': 'lungjax', 'files': ['a.json', 'sub/b.md'], 'pending': []}
  assert sorted(os.listdir(out / 'sub')) == ['b.md']  # No temporary left.


def test_refuses_a_users_file_a_link_and_a_linked_folder_and_leaves_their_targets(tmp_path):
  out, elsewhere = tmp_path / 'out', tmp_path / 'elsewhere'
  out.mkdir()
  elsewhere.mkdir()
  (out / 'drop_list.txt').write_text('mine')
  with pytest.raises(workdir.ForeignFileError, match='drop_list.txt.*lungjax did not write it'):
    workdir.write_text(str(out / 'drop_list.txt'), 'theirs', root=str(out))
  target = elsewhere / 'precious.txt'
  target.write_text('precious')
  (out / 'metrics.json').symlink_to(target)
  with pytest.raises(workdir.ForeignFileError, match='metrics.json.*symbolic link'):
    workdir.write_text(str(out / 'metrics.json'), 'metrics', root=str(out))
  (out / 'linked').symlink_to(elsewhere, target_is_directory=True)
  with pytest.raises(workdir.ForeignFileError, match='linked.*symbolic link'):
    workdir.write_text(str(out / 'linked' / 'new.png'), 'x', root=str(out))
  with pytest.raises(workdir.ForeignFileError, match='outside the output folder'):
    workdir.write_text(str(out / '..' / 'escaped.png'), 'x', root=str(out))
  assert (out / 'drop_list.txt').read_text() == 'mine' and target.read_text() == 'precious'
  assert sorted(os.listdir(elsewhere)) == ['precious.txt'] and not (tmp_path / 'escaped.png').exists()


def test_a_folder_in_a_lungjax_run_adopts_its_files_once_but_never_links(tmp_path):
  run = tmp_path / 'run'
  (run / 'eval' / 'folder-x').mkdir(parents=True)
  (run / workdir.RUN_MARKER).write_text('{}')
  (run / 'eval' / 'folder-x' / 'metrics.json').write_text('{"old": 1}')  # An older lungjax's report.
  (run / 'eval' / 'folder-x' / 'link.md').symlink_to(tmp_path / 'theirs.md')
  folder = str(run / 'eval' / 'folder-x')
  workdir.write_json(os.path.join(folder, 'metrics.json'), {'new': 1}, root=folder)
  assert _manifest(folder)['files'] == ['metrics.json']
  with pytest.raises(workdir.ForeignFileError, match='symbolic link'):
    workdir.write_text(os.path.join(folder, 'link.md'), 'x', root=folder)
  assert not (tmp_path / 'theirs.md').exists()


def test_a_name_is_listed_only_once_its_file_is_whole(tmp_path, monkeypatch):
  out = tmp_path / 'out'

  real = workdir._replace_atomically

  def killed(path, data):
    if path.endswith(workdir.MANIFEST):
      return real(path, data)
    raise KeyboardInterrupt  # Stands for kill -9 before the rename.

  monkeypatch.setattr(workdir, '_replace_atomically', killed)
  with pytest.raises(KeyboardInterrupt):
    workdir.write_bytes(str(out / 'x.png.gradcam.png'), b'png', root=str(out))
  monkeypatch.undo()
  assert _manifest(out) == {'written_by': 'lungjax', 'files': [], 'pending': ['x.png.gradcam.png']}
  assert not (out / 'x.png.gradcam.png').exists()
  workdir.write_bytes(str(out / 'x.png.gradcam.png'), b'png', root=str(out))  # The claimed name is still its own.
  assert _manifest(out)['files'] == ['x.png.gradcam.png'] and _manifest(out)['pending'] == []


def test_read_json_names_a_corrupt_file(tmp_path):
  path = tmp_path / 'model_card.json'
  path.write_text('{"cut": ')
  with pytest.raises(workdir.CorruptFileError, match='model_card.json is not valid JSON'):
    workdir.read_json(str(path))


def test_a_cut_model_card_or_config_is_an_error_naming_the_file(tmp_path):
  from lungjax import checkpoints  # pylint: disable=g-import-not-at-top
  from lungjax.report import model_card  # pylint: disable=g-import-not-at-top
  (tmp_path / 'model_card.json').write_bytes(b'{"model": {"best_step"' )  # Cut short by a full disk.
  with pytest.raises(workdir.CorruptFileError, match='model_card.json is not valid JSON'):
    model_card.append_evaluation(str(tmp_path), {}, 'folder-x')
  (tmp_path / 'config.json').write_text('{"data": ')
  with pytest.raises(workdir.CorruptFileError, match='config.json is not valid JSON'):
    checkpoints.load_run_config(str(tmp_path))


def test_a_card_evaluation_rewrites_both_files_whole(tmp_path, monkeypatch):
  from lungjax.report import model_card  # pylint: disable=g-import-not-at-top
  workdir.write_json(str(tmp_path / model_card.JSON_NAME), {'evaluations': []})
  workdir.write_text(str(tmp_path / model_card.MARKDOWN_NAME), '# card\n')
  monkeypatch.setattr(model_card, 'headline', lambda metrics: {'accuracy': 0.5})
  monkeypatch.setattr(model_card, 'evaluation_markdown', lambda entry: '## eval\n')
  model_card.append_evaluation(str(tmp_path), {}, 'folder-x')
  assert (tmp_path / model_card.MARKDOWN_NAME).read_text() == '# card\n## eval\n'
  assert workdir.read_json(str(tmp_path / model_card.JSON_NAME))['evaluations'][0]['name'] == 'folder-x'
