"""Who may write where: overlays never land on inputs or foreign files, one training per workdir, a foreign folder
is refused, eval never replaces training's reports, and a reader survives a step deleted under it."""

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from configs import tiny
from lungjax import checkpoints, evaluate, steps, train
from lungjax.runtime import distributed, mesh as mesh_lib, workdir
from lungjax.explain import gallery as explain
from lungjax.tools import predict
from lungjax.models import create_model
from tests.conftest import write_image_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _digest(path):
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def _tree_digests(folder):
  return {os.path.relpath(os.path.join(p, n), folder): _digest(os.path.join(p, n))
          for p, _, names in os.walk(folder) for n in names}


def _write_png(path, seed):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pixels = (np.random.default_rng(seed).random((40, 48, 3)) * 255).astype(np.uint8)
  Image.fromarray(pixels).save(path, format='JPEG' if path.endswith('.jpg') else 'PNG')


@pytest.fixture(scope='module')
def trained(tmp_path_factory, synthetic_root):
  """A tiny run (2 epochs, both steps kept) and its config."""
  config = tiny.get_config()
  config.data.root = synthetic_root
  config.checkpoint.keep_latest = 3
  run = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(config, run)
  return config, run


# ---- item 1: overlays --------------------------------------------------------------------------------------------


def test_gradcam_next_to_the_input_never_replaces_it(trained, tmp_path, capsys):
  _, run = trained
  scan = str(tmp_path / 'scan.png')
  _write_png(scan, 0)
  before = _digest(scan)
  assert predict.predict_cli(run, [scan], str(tmp_path)) == 0  # --gradcam_dir=. beside scan.png
  line = json.loads(capsys.readouterr().out)
  assert _digest(scan) == before
  assert line['gradcam'] == str(tmp_path / 'scan.png.gradcam.png') and os.path.isfile(line['gradcam'])
  assert predict.predict_cli(run, [scan], str(tmp_path)) == 0  # Its own overlay it may write again.


def test_gradcam_of_x_jpg_never_replaces_x_png_of_the_folder(trained, tmp_path, capsys):
  _, run = trained
  folder = tmp_path / 'scans'
  _write_png(str(folder / 'x.jpg'), 1)
  _write_png(str(folder / 'x.png'), 2)
  before = _tree_digests(str(folder))
  assert predict.predict_cli(run, [str(folder)], str(tmp_path)) == 0  # Overlays go to tmp_path/scans/...
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [os.path.basename(line['gradcam']) for line in lines] == ['x.jpg.gradcam.png', 'x.png.gradcam.png']
  after = _tree_digests(str(folder))
  assert {name: after[name] for name in before} == before


def test_a_file_lungjax_did_not_write_is_an_error_naming_it(trained, tmp_path, capsys):
  _, run = trained
  scan = str(tmp_path / 'in' / 'scan.png')
  _write_png(scan, 3)
  out = tmp_path / 'out'
  out.mkdir()
  theirs = out / 'scan.png.gradcam.png'
  theirs.write_bytes(b'somebody else\'s file')
  with pytest.raises(workdir.ForeignFileError, match=f"{theirs}.*lungjax did not write it"):
    predict.predict_cli(run, [scan], str(out))
  assert theirs.read_bytes() == b'somebody else\'s file' and sorted(os.listdir(out)) == [theirs.name]
  assert 'class' not in capsys.readouterr().out  # Refused before anything was classified.


def test_claim_outputs_refuses_inputs_duplicates_links_and_foreign_manifests(tmp_path):
  folder = str(tmp_path)
  (tmp_path / 'a.png').write_bytes(b'input')
  with pytest.raises(workdir.ForeignFileError, match='a.png.*one of the input images'):
    workdir.claim_outputs(folder, ['a.png'], inputs=[str(tmp_path / '.' / 'a.png')])
  with pytest.raises(ValueError, match='same file'):
    workdir.claim_outputs(folder, ['b.png', './b.png'])
  (tmp_path / 'elsewhere.png').write_bytes(b'theirs')
  os.symlink(tmp_path / 'elsewhere.png', tmp_path / 'c.png')
  with pytest.raises(workdir.ForeignFileError, match='c.png.*symbolic link'):
    workdir.claim_outputs(folder, ['c.png'])
  paths = workdir.claim_outputs(folder, ['sub/d.png'])
  assert paths == [os.path.join(folder, 'sub', 'd.png')]
  os.makedirs(os.path.dirname(paths[0]))  # The writer (save_overlay) makes the folders.
  open(paths[0], 'wb').close()
  assert workdir.claim_outputs(folder, ['sub/d.png', 'e.png']) == [paths[0], os.path.join(folder, 'e.png')]
  (tmp_path / workdir.MANIFEST).write_text('{"files": ["a.png"]}')
  with pytest.raises(workdir.ForeignFileError, match='not a manifest lungjax can read'):
    workdir.claim_outputs(folder, ['f.png'])


def test_explain_keeps_extensions_and_refuses_a_foreign_file_in_its_folder(trained, synthetic_root, tmp_path):
  _, run = trained
  folder = tmp_path / 'pair'
  _write_png(str(folder / 'x.jpg'), 4)
  _write_png(str(folder / 'x.png'), 5)
  config = tiny.get_config()
  config.data.root = synthetic_root
  config.explain.dir = str(folder)
  summary = explain.explain_folder(config, run, ['explain.dir'])
  assert [os.path.basename(row['overlay']) for row in summary['images']] == ['x.jpg.gradcam.png', 'x.png.gradcam.png']
  explain.explain_folder(config, run, ['explain.dir'])  # Its own files it may write again.
  os.rename(folder, tmp_path / 'other')
  config.explain.dir = str(tmp_path / 'other')
  theirs = os.path.join(run, 'explain', workdir.folder_identity([str(tmp_path / 'other')]), 'gallery.png')  # Put there by someone else.
  os.makedirs(os.path.dirname(theirs))
  with open(theirs, 'wb') as f:
    f.write(b'theirs')
  with pytest.raises(workdir.ForeignFileError, match=f'{theirs}.*lungjax did not write it'):
    explain.explain_folder(config, run, ['explain.dir'])
  assert open(theirs, 'rb').read() == b'theirs' and os.listdir(os.path.dirname(theirs)) == ['gallery.png']


# ---- item 4: the workdir's owner and lock ------------------------------------------------------------------------


def test_training_refuses_a_non_empty_folder_that_is_not_a_lungjax_run(tiny_config, tmp_path):
  folder = tmp_path / 'my project'
  (folder / 'checkpoints' / '100').mkdir(parents=True)
  (folder / 'checkpoints' / '100' / 'weights.bin').write_bytes(b'\1\2\3')
  (folder / 'config.json').write_text('{"learning_rate": 0.1}')
  (folder / 'summary.json').write_text('{"mine": true}')
  before = _tree_digests(str(folder))
  with pytest.raises(workdir.ForeignFolderError, match=f"{folder}.*not a lungjax run.*config.json"):
    train.train_and_evaluate(tiny_config, str(folder))
  assert _tree_digests(str(folder)) == before and sorted(os.listdir(tmp_path)) == ['my project']


def test_claim_marks_new_empty_and_older_runs(tmp_path, trained, caplog):
  _, run = trained
  assert os.path.isfile(os.path.join(run, workdir.RUN_MARKER))  # The run made it.
  workdir.claim(str(tmp_path / 'new'))
  (tmp_path / 'empty').mkdir()
  workdir.claim(str(tmp_path / 'empty'))
  old = str(tmp_path / 'old')  # A run of an older version: no marker.
  shutil.copytree(run, old)
  os.remove(os.path.join(old, workdir.RUN_MARKER))
  with caplog.at_level(logging.WARNING):
    workdir.claim(old)
  assert 'older lungjax version' in caplog.text
  for name in ('new', 'empty', 'old'):
    assert os.path.isfile(tmp_path / name / workdir.RUN_MARKER), name
  (tmp_path / 'a file').write_text('')
  with pytest.raises(workdir.ForeignFolderError, match='is a file'):
    workdir.claim(str(tmp_path / 'a file'))


_HOLD_LOCK = '''
import sys, time
from lungjax.runtime import workdir
with workdir.owned(sys.argv[1]):
  print('locked', flush=True)
  time.sleep(300)
'''


def test_a_second_run_fails_at_once_naming_the_holder_and_a_dead_holder_is_taken_over(tiny_config, tmp_path,
                                                                                      caplog):
  folder = str(tmp_path / 'run')
  holder = subprocess.Popen([sys.executable, '-c', _HOLD_LOCK, folder], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO))
  try:
    assert holder.stdout.readline().strip() == 'locked'
    start = time.monotonic()
    with pytest.raises(workdir.WorkdirBusyError, match=f'in use by process {holder.pid} on host'):
      train.train_and_evaluate(tiny_config, folder)
    assert time.monotonic() - start < 5  # At once: nothing loaded or trained.
    assert sorted(os.listdir(folder)) == [workdir.LOCK, workdir.RUN_MARKER]
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  assert json.load(open(os.path.join(folder, workdir.LOCK)))['pid'] == holder.pid  # Left behind by kill -9.
  with caplog.at_level(logging.WARNING):
    with workdir.owned(folder):
      assert json.load(open(os.path.join(folder, workdir.LOCK)))['pid'] == os.getpid()
  assert f'took over the lock left by process {holder.pid}' in caplog.text
  assert not os.path.exists(os.path.join(folder, workdir.LOCK))  # Released at the end.


def test_the_lock_is_exclusive_within_one_process_and_released_on_errors(tmp_path):
  folder = str(tmp_path)
  with pytest.raises(RuntimeError, match='boom'):
    with workdir.owned(folder):
      with pytest.raises(workdir.WorkdirBusyError, match=f'process {os.getpid()}'):
        with workdir.owned(folder):
          pass
      raise RuntimeError('boom')
  with workdir.owned(folder):  # Free again.
    pass


def test_only_process_0_claims_and_locks(tmp_path, monkeypatch):
  (tmp_path / 'notes.txt').write_text('')
  monkeypatch.setattr(distributed, 'is_main_process', lambda: False)
  with workdir.owned(str(tmp_path)):
    assert sorted(os.listdir(tmp_path)) == ['notes.txt']


def test_eval_of_a_folder_named_val_or_test_keeps_the_training_reports(trained, tmp_path):
  config, run = trained
  reports = {split: _tree_digests(os.path.join(run, 'eval', split)) for split in ('val', 'test')}
  for split in ('val', 'test'):
    folder = write_image_folder(str(tmp_path / split), 2, seed=9)
    eval_config = tiny.get_config()
    eval_config.data.root = config.data.root
    eval_config.eval.dir = folder
    metrics = evaluate.evaluate_checkpoint(eval_config, run, ['eval.dir'])
    assert metrics['out_dir'] == os.path.join(run, 'eval', 'folder-' + workdir.folder_identity([folder])) and metrics['n_images'] == 6
  assert {split: _tree_digests(os.path.join(run, 'eval', split)) for split in ('val', 'test')} == reports


# ---- item 5: reading while a training run deletes steps ----------------------------------------------------------


def _restore_chosen(config, run):
  """What eval / explain / predict do: a read-only manager, then the chosen step, verified."""
  model = create_model(config.model, len(config.data.classes))
  abstract = steps.abstract_train_state(model, steps.create_optimizer(config.train), config.data.image_size,
                                        mesh_lib.make_mesh())
  manager = checkpoints.create_manager(run, config.checkpoint, read_only=True)
  try:
    return checkpoints.restore_chosen(manager, abstract, run)
  finally:
    manager.close()


@pytest.mark.parametrize('when', ['between choosing and reading', 'while reading'])
def test_predict_uses_the_next_step_when_training_deletes_the_chosen_one(trained, tmp_path, monkeypatch, caplog,
                                                                        capsys, when):
  _, run = trained
  copy = str(tmp_path / 'run')
  shutil.copytree(run, copy)
  deleted = []
  if when == 'between choosing and reading':
    real_choose = checkpoints.choose_step

    def choose_then_delete(manager, requested, workdir_):
      step = real_choose(manager, requested, workdir_)
      if not deleted:  # Retention of the training run deletes the chosen step right after it was chosen.
        deleted.append(step)
        shutil.rmtree(os.path.join(str(manager.directory), str(step)))
      return step

    monkeypatch.setattr(checkpoints, 'choose_step', choose_then_delete)
  else:
    real_read = checkpoints.read_integrity

    def delete_then_read(manager, step):
      if not deleted:  # ... or while its files are read.
        deleted.append(step)
        shutil.rmtree(os.path.join(str(manager.directory), str(step)))
      return real_read(manager, step)

    monkeypatch.setattr(checkpoints, 'read_integrity', delete_then_read)
  scan = str(tmp_path / 'scan.png')
  _write_png(scan, 6)
  with caplog.at_level(logging.INFO):
    assert predict.predict_cli(copy, [scan]) == 0
  assert 'class' in json.loads(capsys.readouterr().out)
  remaining = [int(n) for n in os.listdir(checkpoints.checkpoint_dir(copy)) if n.isdigit()]
  assert len(deleted) == 1 and deleted[0] not in remaining and remaining
  assert 'deleted while it was read' in caplog.text and 'corrupt' not in caplog.text.lower()


def test_a_step_whose_files_go_before_its_folder_is_not_corrupt(trained, tmp_path, monkeypatch):
  """orbax deletes a step's files first and its folder last: a read in between fails while the folder is there."""
  config, run = trained
  copy = str(tmp_path / 'run')
  shutil.copytree(run, copy)
  directory = checkpoints.checkpoint_dir(copy)
  real_read = checkpoints.read_integrity
  calls = []

  def files_now_folder_later(manager, step):
    calls.append(step)
    integrity = real_read(manager, step)
    if len(calls) == 1:  # The arrays go now, the folder 0.3 s later.
      shutil.rmtree(os.path.join(directory, str(step), 'state'))
      subprocess.Popen(['sh', '-c', f'sleep 0.3; rm -rf "{os.path.join(directory, str(step))}"'])
    return integrity

  monkeypatch.setattr(checkpoints, 'read_integrity', files_now_folder_later)
  restored = _restore_chosen(config, copy)
  assert len(calls) == 2 and restored.step == calls[1] != calls[0]


def test_opening_survives_a_step_deleted_while_orbax_lists_them(trained, tmp_path, monkeypatch):
  config, run = trained
  real_manager = checkpoints.ocp.CheckpointManager
  opened = []

  def vanishing_once(*args, **kwargs):
    opened.append(1)
    if len(opened) == 1:
      raise FileNotFoundError(2, 'No such file or directory', os.path.join(args[0], '6'))
    return real_manager(*args, **kwargs)

  monkeypatch.setattr(checkpoints.ocp, 'CheckpointManager', vanishing_once)
  assert _restore_chosen(config, run).step > 0 and len(opened) == 2


def test_a_corrupt_step_that_stays_is_still_called_corrupt(trained, tmp_path):
  config, run = trained
  copy = str(tmp_path / 'run')
  shutil.copytree(run, copy)
  manager = checkpoints.create_manager(copy, config.checkpoint, read_only=True)
  chosen = checkpoints.choose_step(manager, -1, copy)
  manager.close()
  shutil.rmtree(os.path.join(checkpoints.checkpoint_dir(copy), str(chosen), 'state'))
  with pytest.raises(checkpoints.CorruptCheckpointError, match=f'step {chosen}'):
    _restore_chosen(config, copy)


def test_write_atomic_replaces_whole_files_and_never_writes_through_a_link(tmp_path):
  target = tmp_path / 'report.md'
  workdir.write_atomic(str(target), 'first')
  workdir.write_atomic(str(target), 'second')
  assert target.read_text() == 'second'
  users = tmp_path / 'users_file.txt'
  users.write_text('mine')
  link = tmp_path / 'metrics.json'
  link.symlink_to(users)
  with pytest.raises(FileExistsError, match='symbolic link'):
    workdir.write_atomic(str(link), 'overwritten?')
  assert users.read_text() == 'mine'
  assert sorted(p.name for p in tmp_path.iterdir()) == [workdir.MANIFEST, 'metrics.json', 'report.md',
                                                        'users_file.txt']


# ---- issue 26: symbolic links and escapes ------------------------------------------------------------------------


def test_gradcam_overlays_never_leave_their_folder(trained, tmp_path, capsys, monkeypatch):
  _, run = trained
  scans = tmp_path / 'scans'
  _write_png(str(scans / 'a.png'), 1)
  out = scans / 'out'
  os.makedirs(out)
  monkeypatch.chdir(out)
  assert predict.predict_cli(run, ['..'], str(out)) == 0  # The folder above --gradcam_dir.
  lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
  assert [l['gradcam'] for l in lines] == [str(out / 'scans' / 'a.png.gradcam.png')]
  assert sorted(os.listdir(scans)) == ['a.png', 'out']  # Nothing beside the input.
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  out2 = tmp_path / 'out2'
  out2.mkdir()
  (out2 / 'scans').symlink_to(elsewhere, target_is_directory=True)  # A planted link inside --gradcam_dir.
  with pytest.raises(workdir.ForeignFileError, match='symbolic link'):
    predict.predict_cli(run, [str(scans / 'a.png'), str(scans)], str(out2))
  assert os.listdir(elsewhere) == []


def test_eval_never_writes_through_a_planted_link(trained, tmp_path):
  config, run = trained
  folder = write_image_folder(str(tmp_path / 'planted'), 2, seed=5)
  precious = tmp_path / 'precious.txt'
  precious.write_text('precious')
  out_dir = os.path.join(run, 'eval', 'folder-' + workdir.folder_identity([folder]))
  os.makedirs(out_dir, exist_ok=True)
  link = os.path.join(out_dir, 'metrics.json')
  os.symlink(precious, link)
  eval_config = tiny.get_config()
  eval_config.data.root = config.data.root
  eval_config.eval.dir = folder
  try:
    with pytest.raises(workdir.ForeignFileError, match='metrics.json.*symbolic link'):
      evaluate.evaluate_checkpoint(eval_config, run, ['eval.dir'])
  finally:
    os.remove(link)
  assert precious.read_text() == 'precious'
