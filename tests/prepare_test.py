"""prepare.py (python -m lungjax.tools.prepare): decodes a root once, prints the summary, says how to train from it and
that extra sources stay folders; --config is required."""

import json
import os
import subprocess
import sys

from tests.conftest import write_image_folder

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _prepare(*flags: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', 'lungjax.tools.prepare', *flags], capture_output=True, text=True,
                        timeout=600, check=False, cwd=_REPO, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


def test_prepare_prints_the_splits_and_how_to_train_from_them(tmp_path):
  root = str(tmp_path / 'root')
  write_image_folder(os.path.join(root, 'train'), 2, seed=0)
  write_image_folder(os.path.join(root, 'test'), 1, seed=1)
  extra = write_image_folder(str(tmp_path / 'adult'), 1, seed=2)
  prepared_dir = str(tmp_path / 'prepared')
  run = _prepare('--config=configs/tiny.py', f'--config.data.root={root}', f'--config.data.prepared_dir={prepared_dir}',
                 f"--config.data.extra_sources=('adult={extra}',)")
  assert run.returncode == 0, run.stderr[-3000:]
  out = run.stdout
  summary = json.loads(out[out.index('{'):out.rindex('}') + 1])
  assert summary['splits']['train']['n_images'] == 6 and summary['splits']['test']['n_images'] == 3
  assert "the extra sources ['adult'] are decoded from their folders each run" in out
  assert f'--config.data.prepared_dir={prepared_dir} (with the same data fields)' in out
  assert os.path.isdir(prepared_dir)


def test_prepare_without_a_config_fails_naming_the_flag():
  run = _prepare()
  assert run.returncode != 0 and '--config' in run.stderr
