"""launch/: the Colab TPU notebook runs top to bottom on a CPU (tiny config, synthetic data); the pod script's command."""

import os
import shlex
import subprocess

import nbclient
import nbformat
import pytest

from lungjax.runtime import workdir as workdir_lib
from tests.conftest import write_image_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, 'launch', 'colab_tpu.ipynb')
POD_SCRIPT = os.path.join(REPO, 'launch', 'tpu_pod.sh')


def _outputs(cell) -> str:
  """A code cell's printed text and the mime types it displayed."""
  parts = []
  for output in cell.get('outputs', []):
    parts.append(output.get('text', ''))
    parts.extend(output.get('data', {}).keys())
    parts.append(output.get('data', {}).get('text/markdown', ''))
  return ''.join(parts)


@pytest.mark.slow
def test_colab_notebook_runs_on_cpu_with_the_tiny_config(tmp_path, monkeypatch):
  root = str(tmp_path / 'data')
  write_image_folder(os.path.join(root, 'train'), 8, seed=0)
  write_image_folder(os.path.join(root, 'test'), 2, seed=1)
  workdir = str(tmp_path / 'workdir')
  for name, value in {'SOURCE': REPO, 'INSTALL': '0', 'DATA': root, 'CONFIG': 'configs/tiny.py',
                      'WORKDIR': workdir, 'TPU': '0',
                      'FLAGS': '--config.train.num_epochs=1 --config.eval.n_bootstrap=20'}.items():
    monkeypatch.setenv(f'LUNGJAX_{name}', value)
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(notebook)
  try:
    nbclient.NotebookClient(notebook, timeout=300, kernel_name='python3',
                            resources={'metadata': {'path': str(tmp_path)}}).execute()
  except nbclient.exceptions.CellExecutionError as error:
    pytest.fail(f'the notebook failed in a cell:\n{str(error)[-4000:]}')
  code = [c for c in notebook.cells if c.cell_type == 'code']
  outputs = [_outputs(c) for c in code]
  assert any('install skipped' in o for o in outputs)
  assert any(o.strip() == 'skipped: no TPU' for o in outputs)  # The TPU check, skipped cleanly.
  assert any("train/: {'Covid': 8, 'Normal': 8, 'Viral Pneumonia': 8}" in o for o in outputs)
  report = outputs[-1]
  assert 'tiny on test' in report and 'accuracy' in report  # report.md of the evaluation, shown as markdown.
  assert report.count('image/png') == 4  # Curves, confusion matrix, ROC, reliability.
  assert os.path.exists(os.path.join(workdir, 'eval', 'test', 'metrics.json'))  # Training's test/ report.
  assert os.path.exists(os.path.join(workdir, 'eval', 'folder-' + workdir_lib.folder_identity([os.path.join(root, 'test')]),
                                     'metrics.json'))  # The --mode=eval one.


def _pod_command(**env: str) -> list[str]:
  result = subprocess.run(['bash', POD_SCRIPT], env={'PATH': os.environ['PATH'], 'DRY_RUN': '1', **env},
                          capture_output=True, text=True, timeout=30)
  assert result.returncode == 0, result.stderr
  # The dry run prints the command quoted for bash (printf %q); bash itself splits it back into arguments.
  split = subprocess.run(['bash', '-c', 'eval "set -- $1"; printf "%s\\0" "$@"', 'split', result.stdout],
                         capture_output=True, text=True, timeout=30, check=True)
  return split.stdout.split('\0')[:-1]


def test_pod_script_runs_lungjax_distributed_on_every_worker():
  args = _pod_command(TPU='my-pod', ZONE='us-central2-b', REPO_URL='https://example.org/lungjax.git',
                      WORKDIR='/mnt/shared/runs/a b', DATA='gs://bucket/Covid19-dataset',
                      FLAGS='--config.train.batch_size=32', PROJECT='p')
  assert args[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'my-pod']
  assert {'--zone=us-central2-b', '--worker=all', '--project=p'} <= set(args)
  remote = next(a for a in args if a.startswith('--command='))[len('--command='):]
  syntax = subprocess.run(['bash', '-n'], input=remote, capture_output=True, text=True, timeout=30)
  assert syntax.returncode == 0, syntax.stderr  # The script each worker runs parses.
  last = shlex.split(remote.splitlines()[-1])
  assert last[:3] == ['python3', '-m', 'lungjax.main']
  assert {'--config.distributed.enabled=True', '--workdir=/mnt/shared/runs/a b', '--config.train.batch_size=32',
          '--config.data.root=$HOME/lungjax-data'} <= set(last)
  assert 'gcloud storage rsync --recursive gs://bucket/Covid19-dataset' in remote
  assert 'git clone --depth=1 --branch=main https://example.org/lungjax.git' in remote


def test_pod_script_names_a_missing_variable():
  result = subprocess.run(['bash', POD_SCRIPT], env={'PATH': os.environ['PATH'], 'TPU': 'x', 'ZONE': 'z'},
                          capture_output=True, text=True, timeout=30)
  assert result.returncode != 0 and 'REPO_URL' in result.stderr
