"""eval, explain and predict rebuild the run's own model from its config.json, the checkpoint's fingerprint checks
that config, and a refused resume leaves the workdir as it was."""

import copy
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import cnn, tiny
from lungjax import checkpoints, evaluate, inference, train
from lungjax.explain import gallery as explain
from lungjax.runtime import fingerprint
from lungjax.tools import predict
from tests.conftest import CLASSES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REORDERED = ('Normal', 'Covid', 'Viral Pneumonia')


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory, synthetic_root):
  """A workdir that the tiny config trained in (2 epochs on the synthetic folders): copy it before changing it."""
  config = tiny.get_config()
  config.data.root = synthetic_root
  workdir = str(tmp_path_factory.mktemp('restore run'))
  train.train_and_evaluate(config, workdir)
  return workdir


def _saved_run(tmp_path, config) -> str:
  """A workdir holding only the config.json that training would write for config."""
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  return workdir


def _copy(workdir, tmp_path) -> str:
  target = str(tmp_path / 'copy of the run')
  shutil.copytree(workdir, target)
  return target


def _edit_config_json(workdir, **fields):
  """Rewrites workdir/config.json with data fields changed (as a refused resume used to)."""
  path = os.path.join(workdir, 'config.json')
  with open(path) as f:
    saved = json.load(f)
  saved['data'].update(fields)
  with open(path, 'w') as f:
    json.dump(saved, f, indent=2)


def _tree_digest(folder):
  """{relative path: sha256} of every file under folder."""
  out = {}
  for dirpath, _, filenames in os.walk(folder):
    for name in filenames:
      path = os.path.join(dirpath, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _main(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  return subprocess.run([sys.executable, '-m', 'lungjax.main', *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600)


# run_config_for_inference: the merge, on a config.json alone.

@pytest.mark.parametrize('field, value, saved_text, given_text', [
    ('model.conv_features', (16, 32, 64), '[4, 8, 8]', '[16, 32, 64]'),
    ('data.classes', REORDERED, str(list(CLASSES)), str(list(REORDERED))),
    ('data.image_size', 64, '32', '64'),
    ('train.learning_rate', 0.01, '0.001', '0.01'),
])
def test_an_overridden_field_that_differs_names_field_saved_and_given(tmp_path, tiny_config, field, value,
                                                                      saved_text, given_text):
  workdir = _saved_run(tmp_path, tiny_config)
  given = copy.deepcopy(tiny_config)
  section, name = field.split('.')
  given[section][name] = value
  given.eval.dir = '/somewhere'
  with pytest.raises(ValueError) as caught:
    checkpoints.run_config_for_inference(workdir, given, ['eval.dir', field])
  message = str(caught.value)
  assert f'config.{field}: the run saved {saved_text}, given {given_text}' in message, message
  assert os.path.join(workdir, 'config.json') in message and 'config.eval' in message


def test_fields_of_another_config_file_come_from_the_saved_config(tmp_path, tiny_config, caplog):
  workdir = _saved_run(tmp_path, tiny_config)
  given = cnn.get_config()  # Another file: another model, image size, batch sizes, name.
  given.eval.dir = '/new/folder'
  given.data.root = '/data/moved'
  with caplog.at_level(logging.INFO):
    merged = checkpoints.run_config_for_inference(workdir, given, ['eval.dir', 'data.root'])
  assert list(merged.model.conv_features) == [4, 8, 8] and merged.data.image_size == 32
  assert merged.name == 'tiny' and merged.eval.batch_size == 4 and merged.train.batch_size == 4
  assert merged.eval.dir == '/new/folder' and merged.data.root == '/data/moved'
  assert 'model.conv_features' in caplog.text and 'data.image_size' in caplog.text
  assert checkpoints.run_config_for_inference(workdir).data.root == tiny_config.data.root


def test_a_python_callers_config_counts_as_set_explicitly(tmp_path, tiny_config):
  workdir = _saved_run(tmp_path, tiny_config)
  given = copy.deepcopy(tiny_config)
  given.eval.tta_views = 2
  given.data.decode_threads = 1
  merged = checkpoints.run_config_for_inference(workdir, given)
  assert merged.eval.tta_views == 2 and merged.data.decode_threads == 1
  given.model.dropout_rate = 0.5
  with pytest.raises(ValueError, match=r'config.model.dropout_rate: the run saved 0.3, given 0.5'):
    checkpoints.run_config_for_inference(workdir, given)


def test_every_inference_field_names_a_config_field():
  config = cnn.get_config()
  for path in checkpoints.INFERENCE_FIELDS:
    node = config
    for part in path.split('.'):
      assert part in node, path
      node = node[part]


# The checkpoint's own record (its fingerprint) against what a restore would build.

def test_restoring_with_reordered_classes_is_refused(trained_workdir, tiny_config):
  config = copy.deepcopy(tiny_config)
  config.data.classes = REORDERED
  with pytest.raises(fingerprint.FingerprintMismatchError, match=r'config\.data\.classes: saved') as caught:
    inference.load(trained_workdir, -1, config=config)
  assert str(list(REORDERED)) in str(caught.value)
  config.eval.dir = os.path.join(tiny_config.data.root, 'test')
  with pytest.raises(ValueError, match=r'config\.data\.classes: the run saved'):
    evaluate.evaluate_checkpoint(config, trained_workdir)


@pytest.mark.parametrize('fields, named', [
    ({'classes': list(REORDERED)}, 'config.data.classes'),
    ({'image_size': 48}, 'config.data.image_size'),
])
def test_predict_refuses_a_config_json_that_disagrees_with_the_checkpoint(trained_workdir, tmp_path, fields, named):
  workdir = _copy(trained_workdir, tmp_path)
  _edit_config_json(workdir, **fields)
  with pytest.raises(fingerprint.FingerprintMismatchError, match=named):
    predict.predict_cli(workdir, [os.path.join(checkpoints.load_run_config(trained_workdir).data.root, 'test')])


def test_explain_and_eval_refuse_a_tampered_config_json(trained_workdir, tmp_path, synthetic_root):
  workdir = _copy(trained_workdir, tmp_path)
  _edit_config_json(workdir, classes=list(REORDERED))
  config = checkpoints.load_run_config(workdir)
  config.explain.dir = config.eval.dir = os.path.join(synthetic_root, 'test')
  with pytest.raises(fingerprint.FingerprintMismatchError, match=r'config\.data\.classes'):
    explain.explain_folder(config, workdir)
  with pytest.raises(fingerprint.FingerprintMismatchError, match=r'config\.data\.classes'):
    evaluate.evaluate_checkpoint(config, workdir)


# Explain and eval with another config file: the saved model, not the file's.

def test_explain_with_another_config_file_uses_the_saved_model(trained_workdir, synthetic_root):
  config = cnn.get_config()
  config.explain.dir = os.path.join(synthetic_root, 'test', 'Normal')
  summary = explain.explain_folder(config, trained_workdir, ['explain.dir'])
  assert summary['n_images'] == 4 and summary['layer'] == 'Conv_2'
  with Image.open(summary['images'][0]['overlay']) as image:
    assert image.size == (32, 32)  # The saved image size, not cnn.py's 256.
  with pytest.raises(ValueError, match=r'config\.model\.conv_features: the run saved \[4, 8, 8\], given \[32, 64'):
    explain.explain_folder(config, trained_workdir)  # A Python caller's config: every field counts as given.


@pytest.mark.slow
def test_eval_command_line_uses_the_saved_config_and_refuses_model_overrides(trained_workdir, synthetic_root):
  folder = os.path.join(synthetic_root, 'test')
  _, labels_at_training, probabilities_at_training = evaluate.read_predictions(
      os.path.join(trained_workdir, 'eval', 'test', 'predictions.csv'), CLASSES)
  for override, named in (('--config.model.conv_features=16,32,64', 'config.model.conv_features'),
                          ("--config.data.classes=('Normal','Covid','Viral Pneumonia')", 'config.data.classes'),
                          ('--config.data.image_size=64', 'config.data.image_size')):
    refused = _main('--config=configs/tiny.py', f'--workdir={trained_workdir}', '--mode=eval',
                    f'--config.eval.dir={folder}', override)
    assert refused.returncode != 0 and f'{named}: the run saved' in refused.stderr, refused.stderr[-3000:]
  evaluated = _main('--config=configs/cnn.py', f'--workdir={trained_workdir}', '--mode=eval',
                    f'--config.eval.dir={folder}')
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  _, labels, probabilities = evaluate.read_predictions(
      os.path.join(trained_workdir, 'eval', 'test', 'predictions.csv'), CLASSES)
  np.testing.assert_array_equal(labels, labels_at_training)
  np.testing.assert_allclose(probabilities, probabilities_at_training, atol=2e-6)
  metrics = json.loads(open(os.path.join(trained_workdir, 'eval', 'test', 'metrics.json')).read())
  assert metrics['n_images'] == 12


# A refused resume changes nothing in the workdir.

def test_a_refused_resume_leaves_the_workdir_byte_for_byte(trained_workdir, tmp_path, synthetic_root):
  workdir = _copy(trained_workdir, tmp_path)
  before = _tree_digest(workdir)
  config = tiny.get_config()
  config.data.root = synthetic_root
  config.data.classes = REORDERED
  with pytest.raises(fingerprint.FingerprintMismatchError, match='classes'):
    train.train_and_evaluate(config, workdir)
  assert _tree_digest(workdir) == before
