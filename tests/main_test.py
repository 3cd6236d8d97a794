"""The command line end to end on a synthetic folder: train, then evaluate a checkpoint on another folder."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from lungjax.runtime import workdir as workdir_lib
from tests.conftest import write_image_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  return subprocess.run([sys.executable, '-m', 'lungjax.main', '--config=configs/tiny.py', *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_train_then_eval_from_the_command_line(tmp_path, synthetic_root):
  workdir = str(tmp_path / 'run')
  trained = _run(f'--workdir={workdir}', f'--config.data.root={synthetic_root}', '--config.train.num_epochs=3')
  assert trained.returncode == 0, trained.stderr[-3000:]
  for name in ('curves.png', 'summary.json', 'eval/val/metrics.json', 'eval/val/report.md',
               'eval/val/confusion_matrix.png', 'eval/test/metrics.json'):
    assert os.path.exists(os.path.join(workdir, name)), name
  summary = json.loads(open(os.path.join(workdir, 'summary.json')).read())
  assert [row['epoch'] for row in summary['history']] == [1, 2, 3]
  assert summary['n_train'] + summary['n_val'] == 36
  assert os.path.abspath(workdir) in trained.stdout

  # An external folder with two of the three classes, named its own way, holding one copy of a training image.
  folder = write_image_folder(str(tmp_path / 'external set'), 3, seed=5, classes=('COVID', 'NORMAL'))
  shutil.copy(os.path.join(synthetic_root, 'train', 'Normal', '000.png'), os.path.join(folder, 'NORMAL', 'copy.png'))
  unmapped = _run(f'--workdir={workdir}', '--mode=eval', f'--config.eval.dir={folder}')
  assert unmapped.returncode != 0 and 'config.eval.class_names' in unmapped.stderr
  evaluated = _run(f'--workdir={workdir}', '--mode=eval', f'--config.eval.dir={folder}',
                   '--config.eval.class_names=COVID=Covid,NORMAL=Normal')
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  out_name = 'folder-' + workdir_lib.folder_identity([folder])
  assert out_name.startswith('folder-external set-') and len(out_name) == len('folder-external set-') + 8
  assert os.path.join(os.path.abspath(workdir), 'eval', out_name, 'report.md') in evaluated.stdout
  metrics = json.loads(open(os.path.join(workdir, 'eval', out_name, 'metrics.json')).read())
  assert metrics['n_images'] == 7 and metrics['checkpoint_step'] == summary['best_step']
  assert metrics['per_class']['Viral Pneumonia']['support'] == 0
  assert metrics['per_class']['Normal']['support'] == 4
  assert [(os.path.basename(o['file']), o['kind']) for o in metrics['overlap_with_training']] == [('copy.png', 'exact')]
  report_text = open(os.path.join(workdir, 'eval', out_name, 'report.md')).read()
  assert 'adult radiographs' in report_text and 'copy.png' in report_text
  assert set(metrics) >= {'accuracy', 'macro_avg', 'weighted_avg', 'per_class', 'confusion_matrix', 'classes',
                          'n_images', 'checkpoint_step'}
  assert sum(map(sum, metrics['confusion_matrix'])) == 7
  record = json.loads(open(os.path.join(workdir, 'calibration.json')).read())
  assert metrics['calibration']['calibrated_by'] == 'served temperature'
  assert metrics['calibration']['temperature'] == record['temperature']

  # The run's own validation split, evaluated again: its calibrated ECE is the out-of-fold one, never in-sample.
  validation = _run(f'--workdir={workdir}', '--mode=eval', '--config.eval.dir=@validation',
                    f'--config.data.root={synthetic_root}')
  assert validation.returncode == 0, validation.stderr[-3000:]
  val = json.loads(open(os.path.join(workdir, 'eval', 'validation', 'metrics.json')).read())['calibration']
  assert val['calibrated_by'] == 'out of fold'
  assert val['fold_temperatures'] == pytest.approx(record['cross_fit']['fold_temperatures'], rel=1e-5)
  assert val['ece_calibrated'] == pytest.approx(record['ece_calibrated_out_of_fold'], abs=1e-6)

  # Training again on the finished workdir resumes at its end: nothing is retrained.
  again = _run(f'--workdir={workdir}', f'--config.data.root={synthetic_root}', '--config.train.num_epochs=3')
  assert again.returncode == 0, again.stderr[-3000:]
  assert json.loads(open(os.path.join(workdir, 'summary.json')).read())['first_step_this_run'] == summary['num_steps']


def test_bad_config_value_names_the_field(tmp_path, synthetic_root):
  result = _run(f'--workdir={tmp_path}', f'--config.data.root={synthetic_root}', '--config.data.val_fraction=1.5')
  assert result.returncode != 0
  assert 'config.data.val_fraction' in result.stderr


def test_the_console_does_not_claim_a_validation_choice_without_a_validation_split():
  """Issue 26, Low 2: with config.data.val_fraction=0 the step reported is the latest, and the line says so."""
  from lungjax import main  # pylint: disable=g-import-not-at-top
  summary = {'num_steps': 18, 'best_step': 18, 'best_metric': 'macro_recall', 'n_val': 0}
  line = main.trained_line(summary)
  assert 'by validation' not in line and 'no validation split (config.data.val_fraction=0)' in line
  assert 'best checkpoint step 18' in line
  assert main.trained_line({**summary, 'best_step': 9, 'n_val': 12}) == (
      'trained 18 steps; best checkpoint step 9 (by validation macro_recall)')
