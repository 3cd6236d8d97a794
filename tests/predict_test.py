"""predict: one JSON line per file, errors that do not stop the others, fixed-shape batches, Grad-CAM overlays."""

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import tiny
from lungjax import inference, train
from lungjax.tools import predict
from lungjax.data import images
from tests.conftest import CLASSES, SHARED_TRAIN, needs_shared_data
from tests.explain_gallery_test import _assert_png_without_metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory, synthetic_root):
  """A workdir that the tiny config trained in (2 epochs on the synthetic folders)."""
  config = tiny.get_config()
  config.data.root = synthetic_root
  workdir = str(tmp_path_factory.mktemp('predict run'))
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture
def bad_files(tmp_path):
  """A truncated PNG, a text file and a path that does not exist."""
  buffer = io.BytesIO()
  Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(buffer, format='PNG')
  corrupt = tmp_path / 'corrupt.png'
  corrupt.write_bytes(buffer.getvalue()[:60])
  notes = tmp_path / 'notes.txt'
  notes.write_text('not an image')
  return [str(corrupt), str(notes), str(tmp_path / 'missing.jpg')]


def _lines(text):
  return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_expand_inputs_walks_folders_recursively_for_images_only(tmp_path):
  root = tmp_path / 'scans'
  (root / 'a' / 'deeper').mkdir(parents=True)
  (root / '.hidden').mkdir()
  (tmp_path / 'empty').mkdir()
  for name in ('a/deeper/x.PNG', 'a/y.jpeg', 'z.jpg', 'readme.md', '.hidden/h.png', 'a/.dot.png'):
    (root / name).write_bytes(b'')
  listed = predict.expand_inputs([str(root), 'loose.png', str(tmp_path / 'empty')])
  assert listed == [(str(root / 'z.jpg'), 'scans/z.jpg'), (str(root / 'a' / 'y.jpeg'), 'scans/a/y.jpeg'),
                    (str(root / 'a' / 'deeper' / 'x.PNG'), 'scans/a/deeper/x.PNG'), ('loose.png', 'loose.png'),
                    (str(tmp_path / 'empty'), 'empty')]


def test_read_image_names_the_file_for_every_failure(tmp_path, bad_files):
  corrupt, notes, missing = bad_files
  for path, reason in ((corrupt, 'truncated'), (notes, 'not a JPEG/PNG image'), (missing, 'no such file'),
                       (str(tmp_path), 'a folder with no .jpg/.jpeg/.png images')):
    with pytest.raises(images.BadImageError, match=reason) as caught:
      inference.read_image(path, 32)
    assert caught.value.path == path and repr(path) in str(caught.value)


def test_predict_prints_a_line_per_file_and_writes_overlays(trained_workdir, synthetic_root, bad_files, tmp_path,
                                                           capsys):
  folder = os.path.join(synthetic_root, 'test')
  gradcam_dir = str(tmp_path / 'cams')
  assert predict.predict_cli(trained_workdir, [folder, *bad_files], gradcam_dir) == 0
  lines = _lines(capsys.readouterr().out)
  expected_files = [os.path.join(folder, c, f'{i:03d}.png') for c in CLASSES for i in range(4)] + bad_files
  assert [line['file'] for line in lines] == expected_files
  for line in lines[:12]:
    probabilities = line['probabilities']
    assert list(probabilities) == list(CLASSES)
    assert abs(sum(probabilities.values()) - 1.0) < 1e-5
    assert line['class'] == max(probabilities, key=probabilities.get)
    relative = os.path.relpath(line['file'], synthetic_root)
    assert line['gradcam'] == os.path.join(gradcam_dir, relative + '.gradcam.png')
    _assert_png_without_metadata(line['gradcam'])
  for line, path in zip(lines[12:], bad_files):
    assert set(line) == {'file', 'error'} and repr(path) in line['error']
  assert 'no such file' in lines[-1]['error']

  # Without --gradcam_dir: the same probabilities from the forward pass alone, and no overlays.
  assert predict.predict_cli(trained_workdir, [folder]) == 0
  plain = _lines(capsys.readouterr().out)
  assert [line['file'] for line in plain] == expected_files[:12] and all('gradcam' not in line for line in plain)
  for with_cam, without in zip(lines, plain):
    np.testing.assert_allclose(list(with_cam['probabilities'].values()), list(without['probabilities'].values()),
                               atol=1e-6)


def _softmax_of_log_over(raw, temperature):
  scaled = np.log(np.asarray(list(raw.values()), np.float64)) / temperature
  return np.exp(scaled - scaled.max()) / np.exp(scaled - scaled.max()).sum()


def test_training_cross_fits_the_temperature_and_reports_the_out_of_fold_ece(trained_workdir):
  record = json.loads(open(os.path.join(trained_workdir, 'calibration.json')).read())
  summary = json.loads(open(os.path.join(trained_workdir, 'summary.json')).read())
  assert record['method'] == 'temperature scaling' and record['temperature'] == summary['temperature']
  assert record['fitted_on'] == {'split': 'validation', 'n_images': summary['n_val'],
                                 'checkpoint_step': summary['best_step']}
  assert record['cross_fit']['folds'] == 5 and record['cross_fit']['seed'] == 0
  assert len(record['cross_fit']['fold_temperatures']) == 5
  assert 'also selected the checkpoint' in record['note']
  val = json.loads(open(os.path.join(trained_workdir, 'eval', 'val', 'metrics.json')).read())['calibration']
  assert 'ece_after_temperature' not in val and val['calibrated_by'] == 'out of fold'
  assert val['ece'] == record['ece_raw'] and val['ece_calibrated'] == record['ece_calibrated_out_of_fold']
  test = json.loads(open(os.path.join(trained_workdir, 'eval', 'test', 'metrics.json')).read())['calibration']
  assert test['calibrated_by'] == 'served temperature' and test['temperature'] == record['temperature']
  val_report = open(os.path.join(trained_workdir, 'eval', 'val', 'report.md')).read()
  test_report = open(os.path.join(trained_workdir, 'eval', 'test', 'report.md')).read()
  assert f'raw: {val["ece"]:.3f}.' in val_report
  assert f'ECE after temperature scaling, out of fold: {val["ece_calibrated"]:.3f}' in val_report
  assert f'raw: {test["ece"]:.3f}.' in test_report
  assert f'ECE after temperature scaling, served temperature: {test["ece_calibrated"]:.3f}' in test_report


def test_predict_serves_the_calibrated_probabilities_and_says_with_which_temperature(trained_workdir, synthetic_root,
                                                                                    tmp_path, capsys):
  folder = os.path.join(synthetic_root, 'test', 'Covid')
  temperature = json.loads(open(os.path.join(trained_workdir, 'calibration.json')).read())['temperature']
  assert predict.predict_cli(trained_workdir, [folder]) == 0
  lines = _lines(capsys.readouterr().out)
  assert len(lines) == 4
  for line in lines:
    assert line['temperature'] == temperature
    np.testing.assert_allclose(list(line['probabilities'].values()),
                               _softmax_of_log_over(line['raw_probabilities'], temperature), atol=1e-6)
    assert line['class'] == max(line['probabilities'], key=line['probabilities'].get)

  # A workdir without calibration.json serves the model's own probabilities: temperature 1.0.
  uncalibrated = str(tmp_path / 'uncalibrated')
  shutil.copytree(trained_workdir, uncalibrated)
  os.remove(os.path.join(uncalibrated, 'calibration.json'))
  assert predict.predict_cli(uncalibrated, [folder]) == 0
  plain = _lines(capsys.readouterr().out)
  for line, calibrated in zip(plain, lines):
    assert line['temperature'] == 1.0
    np.testing.assert_allclose(list(line['probabilities'].values()), list(line['raw_probabilities'].values()),
                               atol=1e-6)
    np.testing.assert_allclose(list(line['raw_probabilities'].values()),
                               list(calibrated['raw_probabilities'].values()), atol=1e-6)


def test_predict_exits_1_when_no_image_ran(trained_workdir, bad_files, capsys):
  assert predict.predict_cli(trained_workdir, bad_files) == 1
  assert [set(line) for line in _lines(capsys.readouterr().out)] == [{'file', 'error'}] * 3


def test_every_batch_is_padded_to_one_shape_so_it_compiles_once(trained_workdir, synthetic_root, bad_files):
  model = inference.load(trained_workdir)
  assert model.batch_size == 4
  real_fn, shapes = model.eval_step, []

  def record(state, batch):
    shapes.append(batch['image'].shape)
    return real_fn(state, batch)

  model.eval_step = record
  test_dir = os.path.join(synthetic_root, 'test')
  files = (predict.expand_inputs([os.path.join(test_dir, 'Covid')])[:3] + [(bad_files[0], 'corrupt.png')] +
           predict.expand_inputs([os.path.join(test_dir, 'Normal')]))
  lines = list(predict.predict_files(model, files))
  assert [line['file'] for line in lines] == [path for path, _ in files]
  assert ['error' in line for line in lines] == [False] * 3 + [True] + [False] * 4
  assert shapes == [(4, 32, 32, 3)] * 2  # 3 images (beside the bad file) padded to 4, then 4.
  assert real_fn._cache_size() == 1  # pylint: disable=protected-access


@needs_shared_data
def test_predict_reads_the_real_radiographs(trained_workdir, tmp_path, capsys):
  files = [os.path.join(SHARED_TRAIN, name) for name in
           ('Covid/01.jpeg', 'Covid/010.png', 'Normal/01.jpeg', 'Viral Pneumonia/01.jpeg')]
  assert predict.predict_cli(trained_workdir, files, str(tmp_path / 'cams')) == 0
  lines = _lines(capsys.readouterr().out)
  assert [line['file'] for line in lines] == files and all('error' not in line for line in lines)
  for line in lines:
    with Image.open(line['gradcam']) as overlay:
      assert overlay.size == (32, 32) and overlay.mode == 'RGB'


@pytest.mark.slow
def test_predict_command_line(trained_workdir, synthetic_root, bad_files):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  folder = os.path.join(synthetic_root, 'test', 'Normal')
  result = subprocess.run([sys.executable, '-m', 'lungjax.tools.predict', f'--workdir={trained_workdir}', folder,
                           bad_files[0]], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = _lines(result.stdout)
  assert [line['file'] for line in lines] == [os.path.join(folder, f'{i:03d}.png') for i in range(4)] + bad_files[:1]
  keys = {'file', 'class', 'probabilities', 'raw_probabilities', 'temperature'}
  assert 'error' in lines[-1] and all(set(line) == keys for line in lines[:4])


def test_a_file_name_that_is_not_utf8_still_gives_valid_json(trained_workdir, tmp_path, capsys):
  """b'\\xff.png' is a legal Linux name; json.dumps of its surrogate-escaped str would write a lone surrogate."""
  folder = os.path.join(os.fsencode(str(tmp_path)), b'scans')
  os.makedirs(folder)
  Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(os.path.join(folder, b'\xff.png'), format='PNG')
  assert predict.predict_cli(trained_workdir, [os.fsdecode(folder), os.fsdecode(folder + b'/\xfe-missing.png')]) == 0
  out = capsys.readouterr().out
  out.encode('utf-8')  # Printable as UTF-8.
  found, missing = _lines(out)
  for line in (found, missing):
    for value in line.values():
      if isinstance(value, str):
        value.encode('utf-8')  # Strict: a lone surrogate raises here.
  assert found['file'].endswith('/scans/\ufffd.png') and 'class' in found
  assert bytes.fromhex(found['file_bytes_hex']) == os.path.join(folder, b'\xff.png')
  assert bytes.fromhex(missing['file_bytes_hex']).endswith(b'/\xfe-missing.png') and 'error' in missing


def test_blank_and_tiny_images_carry_warnings_in_their_lines(trained_workdir, tmp_path, capsys):
  blank, tiny_image, ordinary = (str(tmp_path / name) for name in ('blank.png', 'one.png', 'ordinary.png'))
  Image.fromarray(np.full((64, 64), 128, np.uint8)).save(blank)
  Image.fromarray(np.full((1, 1), 200, np.uint8)).save(tiny_image)
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)).save(ordinary)
  assert predict.predict_cli(trained_workdir, [blank, tiny_image, ordinary]) == 0
  lines = {os.path.basename(line['file']): line for line in _lines(capsys.readouterr().out)}
  assert any('blank' in w for w in lines['blank.png']['warnings']) and 'class' in lines['blank.png']
  assert any('tiny' in w for w in lines['one.png']['warnings']) and 'class' in lines['one.png']
  assert 'warnings' not in lines['ordinary.png']


def test_a_bad_file_mid_batch_does_not_shift_the_rows_after_it(trained_workdir, synthetic_root, bad_files, tmp_path,
                                                               capsys):
  """issue 26: bad files first and in the middle of a batch (batch_size 4), not only last: every good file's line
  holds that file's own probabilities (each checked against the images without the bad files) and its overlay."""
  folder = os.path.join(synthetic_root, 'test')
  good = [os.path.join(folder, c, f'{i:03d}.png') for c in CLASSES for i in range(4)]
  corrupt, notes, missing = bad_files
  inputs = [corrupt, good[0], notes, good[4], good[8], missing, good[9], good[1], good[5]]
  gradcam_dir = str(tmp_path / 'cams')
  assert predict.predict_cli(trained_workdir, inputs, gradcam_dir) == 0
  lines = _lines(capsys.readouterr().out)
  assert [line['file'] for line in lines] == inputs
  model = inference.load(trained_workdir)
  assert model.batch_size == 4
  alone_NC = model.predict([p for p in inputs if p in good])
  assert len({tuple(np.round(row, 6)) for row in alone_NC}) == len(alone_NC)  # Distinct rows: a shift shows.
  classified = [line for line in lines if 'error' not in line]
  assert [line['file'] for line in classified] == [p for p in inputs if p in good]
  for line, expected_C in zip(classified, alone_NC):
    np.testing.assert_allclose(list(line['probabilities'].values()), expected_C, rtol=0, atol=1e-6,
                               err_msg=line['file'])
    assert os.path.isfile(line['gradcam']), line
  assert len({line['gradcam'] for line in classified}) == len(classified)
  assert [set(line) for line in lines if 'error' in line] == [{'file', 'error'}] * 3
