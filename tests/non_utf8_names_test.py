"""Issue 26, Medium 3: file names whose bytes are not UTF-8 (a Windows-1252 'café', a stray 0xff): eval writes
report.md, report.html and predictions.csv whole, and explain its gallery and explain.json, each name shown escaped
(valid UTF-8) where people read it and kept exact where a program reads it back."""

import json
import os
import sys

import pytest

from configs import tiny
from conftest import write_image_folder
from lungjax import evaluate
from lungjax.explain import gallery as explain
from lungjax.data import folders
from tests.predict_test import trained_workdir  # pylint: disable=unused-import  (a fixture: a tiny trained run)

RAW = b'caf\xe9 \xff.png'  # Not UTF-8.
SHOWN = 'caf\\xe9 \\xff.png'  # As report.md, report.html, explain.json and the gallery show it.

pytestmark = pytest.mark.skipif(sys.getfilesystemencoding().lower() != 'utf-8', reason='needs a UTF-8 file system')


@pytest.fixture
def odd_folder(tmp_path):
  """A class-folder tree of 2 images per class, one Covid image renamed to RAW: (folder, its path as Python has it)."""
  folder = write_image_folder(str(tmp_path / 'ward'), 2, seed=3)
  covid = os.fsencode(os.path.join(folder, 'Covid'))
  os.rename(os.path.join(covid, b'000.png'), os.path.join(covid, RAW))
  return folder, os.fsdecode(os.path.join(covid, RAW))


def test_shown_name_escapes_only_the_bytes_that_are_not_utf8():
  assert folders.shown_name(os.fsdecode(RAW)) == SHOWN
  assert folders.shown_name('Ünïcödé ok.png') == 'Ünïcödé ok.png'
  assert folders.shown_name('\ud800x') == '\\xed\\xa0\\x80x'  # A surrogate no file name made.


def test_eval_writes_every_report_whole_with_a_non_utf8_file_name(trained_workdir, odd_folder):
  folder, odd_path = odd_folder
  config = tiny.get_config()
  config.eval.dir = folder
  metrics = evaluate.evaluate_checkpoint(config, trained_workdir, ['eval.dir'])
  assert metrics['n_images'] == 6
  out_dir = metrics['out_dir']
  for name in ('report.md', 'report.html'):
    with open(os.path.join(out_dir, name), encoding='utf-8') as f:  # Valid UTF-8, or this raises.
      text = f.read()
    assert text.rstrip().endswith('</html>') if name.endswith('html') else '## ' in text
  with open(os.path.join(out_dir, 'report.html'), encoding='utf-8') as f:
    assert SHOWN in f.read()
  files, labels_N, _ = evaluate.read_predictions(os.path.join(out_dir, 'predictions.csv'), tuple(config.data.classes))
  assert len(files) == 6 and odd_path in files  # The exact name: the path to open.
  assert os.path.isfile(files[files.index(odd_path)])
  assert json.loads(open(os.path.join(out_dir, 'metrics.json')).read())['n_images'] == 6


def test_explain_writes_its_gallery_and_explain_json_with_a_non_utf8_file_name(trained_workdir, odd_folder):
  folder, odd_path = odd_folder
  config = tiny.get_config()
  config.explain.dir = folder
  summary = explain.explain_folder(config, trained_workdir)
  assert summary['n_images'] == 6
  with open(os.path.join(summary['out_dir'], 'explain.json'), encoding='utf-8') as f:
    written = json.load(f)
  odd = [row for row in written['images'] if 'file_bytes_hex' in row]
  assert len(odd) == 1 and odd[0]['file'].endswith(SHOWN)
  assert os.fsdecode(bytes.fromhex(odd[0]['file_bytes_hex'])) == odd_path
  assert os.path.isfile(bytes.fromhex(odd[0]['overlay_bytes_hex']))
  assert os.path.getsize(summary['gallery']) > 0
