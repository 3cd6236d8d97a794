"""Issue 26 High 2 and 3: a report folder is named by the folder it reports on (two folders called test: two
reports), and its files are written as one unit (a completion marker last, with their hashes) that readers check."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from configs import tiny
from lungjax import evaluate, inference
from lungjax.explain import gallery as explain
from lungjax.report import model_card, report_html
from lungjax.runtime import workdir
from tests.conftest import write_image_folder
from tests.predict_test import trained_workdir  # pylint: disable=unused-import  (a fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tree_digests(folder):
  return {os.path.relpath(os.path.join(p, n), folder): hashlib.sha256(open(os.path.join(p, n), 'rb').read()).hexdigest()
          for p, _, names in os.walk(folder) for n in names}


def _eval_config(folder, synthetic_root):
  config = tiny.get_config()
  config.data.root = synthetic_root
  config.eval.dir = folder
  config.eval.n_bootstrap = 20
  return config


# ---- High 2: the folder's identity names its report ----------------------------------------------------------


def test_folder_identity_tells_same_named_folders_apart_and_not_spellings(tmp_path):
  (tmp_path / 'a' / 'test').mkdir(parents=True)
  (tmp_path / 'b' / 'test').mkdir(parents=True)
  (tmp_path / 'link').symlink_to(tmp_path / 'a' / 'test', target_is_directory=True)
  a = workdir.folder_identity([str(tmp_path / 'a' / 'test')])
  assert a.startswith('test-') and len(a) == len('test-') + 8
  assert a != workdir.folder_identity([str(tmp_path / 'b' / 'test')])
  for spelling in (str(tmp_path / 'a' / 'test') + '/', str(tmp_path / 'a' / '..' / 'a' / 'test'),
                   str(tmp_path / 'link')):
    assert workdir.folder_identity([spelling]).endswith(a[-8:])
  two = workdir.folder_identity([str(tmp_path / 'a' / 'test'), str(tmp_path / 'b' / 'test')])
  assert two.startswith('test+test-')


def test_two_eval_folders_of_one_name_keep_two_reports(trained_workdir, synthetic_root, tmp_path):
  first = write_image_folder(str(tmp_path / 'site-a' / 'test'), 3, seed=4)
  second = write_image_folder(str(tmp_path / 'site-b' / 'test'), 1, seed=6)
  one = evaluate.evaluate_checkpoint(_eval_config(first, synthetic_root), trained_workdir, ['eval.dir'])
  before = _tree_digests(one['out_dir'])
  two = evaluate.evaluate_checkpoint(_eval_config(second, synthetic_root), trained_workdir, ['eval.dir'])
  assert one['out_dir'] != two['out_dir']
  assert os.path.basename(one['out_dir']).startswith('folder-test-')
  assert (one['n_images'], two['n_images']) == (9, 3)
  assert _tree_digests(one['out_dir']) == before  # The 9-image report is not replaced by the 3-image one.
  assert json.load(open(os.path.join(one['out_dir'], 'metrics.json')))['n_images'] == 9
  assert 'tiny on test' in open(os.path.join(two['out_dir'], 'report.md')).read()  # The folder's own name.
  names = [e['name'] for e in json.load(open(os.path.join(trained_workdir, 'model_card.json')))['evaluations']]
  assert os.path.basename(one['out_dir']) in names and os.path.basename(two['out_dir']) in names


def test_two_explain_folders_of_one_name_are_not_mixed(trained_workdir, synthetic_root, tmp_path):
  summaries = []
  for site, per_class in (('site-a', 2), ('site-b', 1)):
    folder = write_image_folder(str(tmp_path / site / 'scans'), per_class, seed=per_class)
    config = _eval_config('', synthetic_root)
    config.explain.dir = folder
    summaries.append(explain.explain_folder(config, trained_workdir))
  a, b = summaries
  assert a['out_dir'] != b['out_dir'] and (a['n_images'], b['n_images']) == (6, 3)
  kept = json.load(open(os.path.join(a['out_dir'], 'explain.json')))
  assert kept['n_images'] == 6 and all(r['overlay'].startswith(a['out_dir']) for r in kept['images'])


# ---- High 3: a folder's files as one unit ----------------------------------------------------------------------


def test_begin_finish_check_a_unit(tmp_path, caplog):
  folder = str(tmp_path / 'report')
  assert workdir.unit_problems(folder) is None
  assert workdir.check_unit(folder) is False and 'no .complete marker' in caplog.text
  workdir.begin_unit(folder)
  workdir.write_text(os.path.join(folder, 'metrics.json'), '{}')
  with pytest.raises(workdir.IncompleteFolderError, match=r'report is incomplete: its writer .* stopped before'):
    workdir.check_unit(folder)
  workdir.write_text(os.path.join(folder, 'report.md'), 'report')
  workdir.finish_unit(folder, ['metrics.json', 'report.md'])
  assert workdir.check_unit(folder) is True
  workdir.write_text(os.path.join(folder, 'report.md'), 'another run')
  with pytest.raises(workdir.IncompleteFolderError, match='report.md changed after'):
    workdir.check_unit(folder)
  os.remove(os.path.join(folder, 'metrics.json'))
  with pytest.raises(workdir.IncompleteFolderError, match='metrics.json is missing'):
    workdir.check_unit(folder)
  with pytest.raises(workdir.IncompleteFolderError, match='predictions.csv was not written'):
    workdir.finish_unit(folder, ['predictions.csv'])


def test_kill_9_midway_leaves_a_folder_readers_call_incomplete(tmp_path):
  folder = str(tmp_path / 'eval' / 'val')
  workdir.begin_unit(folder)
  for name in ('metrics.json', 'report.md', 'predictions.csv'):  # The previous run's, complete.
    workdir.write_text(os.path.join(folder, name), f'old {name}')
  workdir.finish_unit(folder, ['metrics.json', 'report.md', 'predictions.csv'])
  script = ('import os, signal, sys\nfrom lungjax.runtime import workdir\n'
            f'folder = {folder!r}\nworkdir.begin_unit(folder)\n'
            'workdir.write_json(os.path.join(folder, "metrics.json"), {"n_images": 2})\n'
            'os.kill(os.getpid(), signal.SIGKILL)\n')
  killed = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True, check=False)
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  assert open(os.path.join(folder, 'report.md')).read() == 'old report.md'  # Looks complete, is not:
  with pytest.raises(workdir.IncompleteFolderError, match='stopped before finishing it'):
    workdir.check_unit(folder)
  with pytest.raises(workdir.IncompleteFolderError, match='validation report .*eval/val is incomplete'):
    model_card.model_card(str(tmp_path), tiny.get_config(), {}, {}, None)


def test_eval_writes_its_folder_as_a_unit_and_a_half_rewrite_is_caught(trained_workdir, synthetic_root, tmp_path,
                                                                      monkeypatch):
  folder = write_image_folder(str(tmp_path / 'unit'), 1, seed=8)
  metrics = evaluate.evaluate_checkpoint(_eval_config(folder, synthetic_root), trained_workdir, ['eval.dir'])
  out_dir = metrics['out_dir']
  marker = json.load(open(os.path.join(out_dir, workdir.COMPLETE)))
  assert marker['complete'] is True and {'metrics.json', 'report.md', 'report.html', 'predictions.csv',
                                         'confusion_matrix.png'} <= set(marker['files'])
  assert workdir.check_unit(out_dir) is True

  def killed(*args, **kwargs):
    raise KeyboardInterrupt('killed after metrics.json')
  monkeypatch.setattr(report_html, 'write_report_html', killed)
  with pytest.raises(KeyboardInterrupt):
    evaluate.evaluate_checkpoint(_eval_config(folder, synthetic_root), trained_workdir, ['eval.dir'])
  with pytest.raises(workdir.IncompleteFolderError, match='stopped before finishing'):
    workdir.check_unit(out_dir)


def test_load_refuses_a_run_whose_final_outputs_are_incomplete(trained_workdir, tmp_path):
  assert workdir.check_unit(trained_workdir) is True  # Training wrote summary.json ... and the marker last.
  run = str(tmp_path / 'copy')
  shutil.copytree(trained_workdir, run)
  inference.load(run)
  summary = os.path.join(run, 'summary.json')
  workdir.write_text(summary, open(summary).read().replace('"best_step"', '"best_step" ', 1))
  with pytest.raises(workdir.IncompleteFolderError, match=r'summary.json changed.*Rerun its training'):
    inference.load(run)
  os.remove(os.path.join(run, 'summary.json'))  # Deleted by hand after the run: served, with a warning.
  workdir.write_text(summary, '{}')
  with pytest.raises(workdir.IncompleteFolderError, match='summary.json changed'):
    inference.load(run)
  os.remove(summary)
  inference.load(run)
  workdir.begin_unit(run)  # A training killed while it wrote them.
  with pytest.raises(workdir.IncompleteFolderError, match='stopped before finishing'):
    inference.load(run)


def test_a_corrupt_json_in_a_workdir_names_the_file(tmp_path):
  card = tmp_path / 'model_card.json'
  card.write_text('{"model": {"best_step": 3}, "evalu')  # Cut short (a full disk in an older lungjax).
  with pytest.raises(workdir.CorruptFileError, match='model_card.json is not valid JSON'):
    report_html.run_card(str(tmp_path), 3)


# ---- Low 3: on_mismatch=fresh sets the old run's reports aside --------------------------------------------------


def test_set_aside_moves_only_lungjaxs_report_folders(tmp_path):
  run = str(tmp_path / 'run')
  ours = os.path.join(run, 'eval', 'folder-x-12345678')
  workdir.write_text(os.path.join(ours, 'metrics.json'), '{}')
  workdir.write_json(os.path.join(run, 'calibration.json'), {'temperature': 2.0})
  theirs = os.path.join(run, 'eval', 'my notes')
  os.makedirs(theirs)
  open(os.path.join(theirs, 'n.txt'), 'w').write('mine')
  moved = workdir.set_aside_reports(run, os.path.join(run, 'reports.replaced-1'))
  assert moved == [os.path.join('eval', 'folder-x-12345678'), 'calibration.json']
  assert os.listdir(os.path.join(run, 'eval')) == ['my notes'] and not os.path.exists(os.path.join(run, 'calibration.json'))
  assert os.path.isfile(os.path.join(run, 'reports.replaced-1', 'eval', 'folder-x-12345678', 'metrics.json'))


def test_a_fresh_start_leaves_no_old_report_beside_the_new_run(trained_workdir, synthetic_root, tmp_path):
  from lungjax import train  # pylint: disable=g-import-not-at-top
  run = str(tmp_path / 'run')
  shutil.copytree(trained_workdir, run)
  folder = write_image_folder(str(tmp_path / 'ext'), 1, seed=11)
  old = evaluate.evaluate_checkpoint(_eval_config(folder, synthetic_root), run, ['eval.dir'])['out_dir']
  config = tiny.get_config()
  config.data.root = synthetic_root
  config.seed = 5  # Another run: refused unless on_mismatch=fresh.
  config.train.num_epochs = 1
  config.checkpoint.on_mismatch = 'fresh'
  train.train_and_evaluate(config, run)
  assert not os.path.exists(old)  # The old model's report is not beside the new run ...
  aside = [n for n in os.listdir(run) if n.startswith('reports.replaced-')]
  assert len(aside) == 1  # ... but set aside, whole.
  assert os.path.isfile(os.path.join(run, aside[0], 'eval', os.path.basename(old), 'metrics.json'))
  assert workdir.check_unit(os.path.join(run, aside[0], 'eval', os.path.basename(old))) is True
  assert sorted(os.listdir(os.path.join(run, 'eval'))) == ['test', 'val']  # The new run's own.
  assert workdir.check_unit(run) is True and inference.load(run).checkpoint_step == 6


# ---- Low 4: kill -9 during predict --gradcam_dir ---------------------------------------------------------------


def test_kill_9_mid_overlay_lists_no_truncated_overlay(trained_workdir, tmp_path):
  scans = write_image_folder(str(tmp_path / 'scans'), 1, seed=12)
  out = str(tmp_path / 'overlays')
  # Killed after the second overlay's bytes are written to its temporary file, before the rename.
  script = ('import os, signal, sys\nfrom lungjax.tools import predict\n'
            'real, count = os.replace, [0]\n'
            'def replace(src, dst, **kwargs):\n'
            '  if str(dst).endswith(".gradcam.png"):\n'
            '    count[0] += 1\n'
            '    if count[0] == 2:\n'
            '      os.kill(os.getpid(), signal.SIGKILL)\n'
            '  return real(src, dst, **kwargs)\n'
            'os.replace = replace\n'
            f'predict.predict_cli({trained_workdir!r}, [{scans!r}], {out!r})\n')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  killed = subprocess.run([sys.executable, '-c', script], cwd=REPO, env=env, capture_output=True, text=True,
                          check=False, timeout=600)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  manifest = json.load(open(os.path.join(out, workdir.MANIFEST)))
  assert len(manifest['files']) == 1 and len(manifest['pending']) >= 1  # The killed one: claimed, not listed.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for name in manifest['files']:  # Every listed overlay is whole.
    with Image.open(os.path.join(out, name)) as image:
      image.load()
  for name in manifest['pending']:
    assert not os.path.exists(os.path.join(out, name))  # Never half a file at a listed or claimed name.
  # The rerun writes them all (its own claimed names), and lists each once whole.
  again = subprocess.run([sys.executable, '-m', 'lungjax.tools.predict', f'--workdir={trained_workdir}',
                          f'--gradcam_dir={out}', scans], cwd=REPO, env=env, capture_output=True, text=True,
                         check=False, timeout=600)
  assert again.returncode == 0, again.stderr[-2000:]
  manifest = json.load(open(os.path.join(out, workdir.MANIFEST)))
  assert len(manifest['files']) == 3 and manifest['pending'] == []
