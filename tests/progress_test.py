"""What a person reads: progress bars only in a terminal, a short start summary, report.md with its plots, and
Grad-CAM gallery titles that fit their tiles."""

import os
import pty
import select
import subprocess
import sys

import numpy as np
from PIL import Image

from configs import tiny
from lungjax import evaluate, main
from lungjax.explain import gallery as explain
from lungjax.report import markdown as report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DECODE = """
import os, sys
import numpy as np
from PIL import Image
from lungjax.data import folders, images
folder = sys.argv[1]
records = []
for i in range(5):
  path = os.path.join(folder, f'{i}.png')
  Image.fromarray(np.full((40, 40), 40 * i, np.uint8)).save(path)
  records.append(folders.Record(path, 0))
print(len(images.decode_records(records, 16, threads=1)))
"""


def _run_decode(tmp_path, stderr_on_terminal: bool) -> tuple[str, str]:
  """Runs a tiny decode in a subprocess; returns (stdout, stderr), stderr on a pseudo-terminal or a pipe."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'TF_CPP_MIN_LOG_LEVEL': '3', 'PYTHONPATH': REPO}
  command = [sys.executable, '-c', _DECODE, str(tmp_path)]
  if not stderr_on_terminal:
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=120, check=True)
    return done.stdout, done.stderr
  controller, terminal = pty.openpty()
  process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=terminal, cwd=REPO, env=env)
  os.close(terminal)
  chunks = []
  while True:
    ready, _, _ = select.select([controller], [], [], 120)
    if not ready:
      break
    try:
      chunk = os.read(controller, 4096)
    except OSError:  # EIO: the child closed its end.
      break
    if not chunk:
      break
    chunks.append(chunk)
  os.close(controller)
  stdout = process.stdout.read().decode()
  assert process.wait(timeout=120) == 0
  return stdout, b''.join(chunks).decode(errors='replace')




def test_decoding_shows_a_bar_in_a_terminal_and_nothing_otherwise(tmp_path):
  stdout, stderr = _run_decode(tmp_path, stderr_on_terminal=True)
  assert stdout.strip() == '5'
  assert 'decoding:' in stderr and '/5 [' in stderr, stderr  # tqdm's bar: 'decoding:   0%|...| 0/5 [...]'
  stdout, stderr = _run_decode(tmp_path, stderr_on_terminal=False)
  assert stdout.strip() == '5'
  # 'decoding:' with its colon: the blank-image warnings name files under tmp_path, 'test_decoding_shows_...'.
  assert 'decoding:' not in stderr and '/5 [' not in stderr, stderr


def test_the_start_summary_is_short_and_names_data_model_steps_and_outputs():
  config = tiny.get_config()
  config.data.root = '/data/xray'
  text = main.start_summary(config, 'train', 'runs/w')
  assert len(text.splitlines()) <= 6
  for part in ('/data/xray', 'cnn at 32x32', '2 epochs of batch 4', os.path.abspath('runs/w'), 'config.json'):
    assert part in text, part
  assert 'adam_b1' not in text  # Not the whole config.
  assert str(os.path.abspath('runs/w')) in main.start_summary(config, 'eval', 'runs/w')


def test_report_md_embeds_the_plots_it_has(tmp_path):
  rng = np.random.default_rng(0)
  classes = ('a', 'b', 'c')
  labels_N = np.arange(30) % 3
  probabilities_NC = rng.dirichlet(np.ones(3), 30)
  metrics = evaluate.evaluation_metrics(labels_N, probabilities_NC, classes)
  report.write_evaluation(metrics, str(tmp_path / 'full'), 'full', labels_N, probabilities_NC)
  text = (tmp_path / 'full' / 'report.md').read_text()
  for name, alt in report.PLOTS:
    assert f'![{alt}]({name})' in text and (tmp_path / 'full' / name).exists()
  report.write_evaluation(metrics, str(tmp_path / 'bare'), 'bare')
  text = (tmp_path / 'bare' / 'report.md').read_text()
  assert '![confusion matrix](confusion_matrix.png)' in text and 'roc.png' not in text


def test_middle_ellipsis_keeps_both_ends():
  assert explain.middle_ellipsis('short', 10) == 'short'
  cut = explain.middle_ellipsis('COVID-19_radiography_patient_0001_view_PA_2020.png', 20)
  assert len(cut) == 20 and cut.startswith('COVID-19_r') and cut.endswith('20.png') and '…' in cut


def test_gallery_titles_of_60_character_names_fit_their_tiles(tmp_path, monkeypatch):
  figures = []
  monkeypatch.setattr(explain.plt, 'close', figures.append)
  n = 12
  names = [f'{i:02d}_' + 'x' * 50 + f'_{i:02d}.png' for i in range(n)]
  assert all(len(name) == 60 for name in names)
  titles = [f'{name}\ntrue Viral Pneumonia\npred Viral Pneumonia 99%' for name in names]
  overlays = np.zeros((n, 32, 32, 3), np.uint8)
  explain.plot_gallery(overlays, titles, ['black'] * n, str(tmp_path / 'gallery.png'), 'gallery')
  (figure,) = figures
  renderer = figure.canvas.get_renderer()
  shown = [ax for ax in figure.axes if ax.get_title()]
  assert len(shown) == n
  for ax, name in zip(shown, names):
    first_line = ax.get_title().split('\n')[0]
    assert first_line != name and first_line.startswith(name[:5]) and first_line.endswith(name[-6:])
    assert ax.title.get_window_extent(renderer).width <= ax.get_window_extent(renderer).width
