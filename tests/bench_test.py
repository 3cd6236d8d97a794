"""The benchmark: compilations counted, every figure measured, Keras timed side by side in a child process."""

import os
import subprocess
import sys

import json
import pytest

from benchmarks import bench
from lungjax import train

_TINY_KERAS = '''
import keras
from keras import layers
def model():
  return keras.Sequential([keras.Input((32, 32, 3)), layers.Conv2D(4, 3, padding="same", activation="relu"),
                           layers.MaxPooling2D(), layers.Flatten(), layers.Dense(3, activation="softmax")])
'''


def test_two_epochs_and_evaluation_compile_each_step_once(tiny_config, tmp_path):
  with bench.count_compilations() as compiles:
    summary = train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))
  assert summary['num_steps'] == 2 * summary['steps_per_epoch'] and 'test' in summary['evaluations']
  assert len(compiles['train_step']) == 1
  assert len(compiles['eval_step']) == 1


def test_benchmark_measures_every_figure_on_a_folder(tiny_config):
  result = bench.benchmark(tiny_config, keras_model=None, rounds=2, n_steps=2, warmup_steps=1, epochs=2)
  for name in ('train_images_per_s', 'epoch_images_per_s', 'eval_images_per_s', 'loader_images_per_s',
               'loader_vs_train_step', 'peak_rss_gb', 'first_train_step_s', 'compile_train_s', 'compile_eval_s'):
    assert result[name] > 0, name
  assert len(result['train_images_per_s_rounds']) == 2 and len(result['loader_images_per_s_epochs']) == 2
  assert result['compilations'] == {'train_step': 1, 'eval_step': 1}
  assert result['n_train'] + result['n_val'] == 36 and 'keras_train_images_per_s' not in result
  assert result['machine_start']['cpu_count'] == os.cpu_count()


@pytest.mark.slow
def test_keras_is_timed_alternately_and_written_beside_lungjax(tiny_config, tmp_path):
  keras_file = tmp_path / 'tiny_keras.py'
  keras_file.write_text(_TINY_KERAS)
  out_dir = tmp_path / 'bench'
  command = [sys.executable, '-m', 'benchmarks.bench', '--config=configs/tiny.py', '--keras',
             f'--keras_model={keras_file}', '--rounds=2', '--steps=2', f'--out_dir={out_dir}']
  run = subprocess.run(command, capture_output=True, text=True, timeout=600,
                       cwd=os.path.dirname(os.path.dirname(bench.__file__)))
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads((out_dir / 'tiny.json').read_text())
  assert len(result['keras_train_images_per_s_rounds']) == 2 and result['keras_train_images_per_s'] > 0
  assert result['ratio_vs_keras'] == round(result['train_images_per_s'] / result['keras_train_images_per_s'], 3)
  assert result['keras']['params'] > 0 and 'real_folder' in result
  assert 'ratio_vs_keras: ' in run.stdout
  # The host memory policy lungjax.main applies is applied here too, and its trims are counted.
  assert result['keep_freed_host_memory_gb'] == 2.2 and isinstance(result['host_memory_trims'], int)
  assert 0 <= result['host_memory_trims_in_rounds'] <= result['host_memory_trims']


def test_keras_model_for_another_image_size_is_refused(tiny_config):
  default_seed = bench.SEED_KERAS_MODEL
  if not os.path.isfile(default_seed):
    pytest.skip('../shared/bench/seed_keras.py is absent')
  with pytest.raises(ValueError, match='config.data.image_size=32'):
    bench.KerasChild(default_seed, 4, 32, [1.0, 1.0, 1.0], 0)
