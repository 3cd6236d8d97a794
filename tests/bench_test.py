"""The benchmark: compilations counted, every figure measured, Keras timed side by side in a child process."""

import os
import subprocess
import sys

import json
import numpy as np
import pytest
from PIL import Image

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
  folder = tmp_path / 'predict'
  for index in range(12):
    (folder / f'c{index % 2}').mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 30), 20 * index, np.uint8)).save(folder / f'c{index % 2}' / f'{index}.png')
  command = [sys.executable, '-m', 'benchmarks.bench', '--config=configs/tiny.py', '--keras',
             f'--keras_model={keras_file}', '--rounds=2', '--steps=2', f'--out_dir={out_dir}',
             f'--predict_folder={folder}']
  run = subprocess.run(command, capture_output=True, text=True, timeout=600,
                       cwd=os.path.dirname(os.path.dirname(bench.__file__)))
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads((out_dir / 'tiny.json').read_text())
  for name in ('float32', 'bfloat16'):
    assert len(result[f'keras_{name}_train_images_per_s_rounds']) == 2, name
    # The headline is the median of the unrounded per-round ratios; the stored rounds are each rounded to 3 places.
    assert result[f'ratio_vs_keras_{name}'] == pytest.approx(
        float(np.median(result[f'ratio_vs_keras_{name}_rounds'])), abs=1e-3)
  assert result['keras']['mixed_bfloat16']['policy'] == 'mixed_bfloat16'
  faster = result['keras_train_faster_policy'].removeprefix('mixed_')
  headline = result.get('ratio_vs_keras', result.get('ratio_vs_keras_noisy'))
  assert headline == result[f'ratio_vs_keras_{faster}'] and result['keras_train_images_per_s'] > 0
  assert ('ratio_vs_keras' in result) != result[f'ratio_vs_keras_{faster}_spread']['noisy']
  assert result['keras']['float32']['params'] > 0 and 'real_folder' in result
  assert 'headline: ' in run.stdout
  assert result['predict_n_images'] == 12 and result['predict_images_per_s'] > 0
  assert len(result['keras_bfloat16_predict_images_per_s_rounds']) == 2
  # The host memory policy lungjax.main applies is applied here too, and its trims are counted.
  assert result['keep_freed_host_memory_gb'] == 2.2 and isinstance(result['host_memory_trims'], int)
  assert 0 <= result['host_memory_trims_in_rounds'] <= result['host_memory_trims']


def test_keras_model_for_another_image_size_is_refused(tiny_config):
  default_seed = bench.SEED_KERAS_MODEL
  if not os.path.isfile(default_seed):
    pytest.skip('../shared/bench/seed_keras.py is absent')
  with pytest.raises(ValueError, match='config.data.image_size=32'):
    bench.KerasChild(default_seed, 4, 32, [1.0, 1.0, 1.0], 0)


def test_the_headline_is_the_median_of_per_round_ratios_and_refused_when_they_spread():
  spread = bench.ratio_spread([1.0, 1.3, 1.1, 1.2, 0.9])
  assert (spread['median'], spread['min'], spread['max'], spread['q1'], spread['q3']) == (1.1, 0.9, 1.3, 1.0, 1.2)
  assert spread['iqr'] == 0.2 and spread['spread'] == 0.4 and spread['noisy']
  assert not bench.ratio_spread([1.0, 1.1, 1.2])['noisy'] and bench.ratio_spread([1.0, 1.25], 0.2)['noisy']
  result = {}
  # Keras bfloat16 is the faster by median img/s: the headline is against it, float32's ratio is kept too.
  bench.compare(result, 'train', [20.0, 21.0, 22.0], {'float32': [10.0, 10.5, 11.0], 'mixed_bfloat16': [20.0, 20.0, 20.0]})
  assert result['keras_train_faster_policy'] == 'mixed_bfloat16' and result['keras_train_images_per_s'] == 20.0
  assert result['ratio_vs_keras'] == result['ratio_vs_keras_bfloat16'] == 1.05 and 'ratio_vs_keras_noisy' not in result
  assert result['ratio_vs_keras_bfloat16_rounds'] == [1.0, 1.05, 1.1] and result['ratio_vs_keras_float32'] == 2.0
  noisy = {}
  bench.compare(noisy, 'predict', [10.0, 20.0, 10.0], {'float32': [10.0, 10.0, 10.0]})
  assert 'predict_ratio_vs_keras' not in noisy and noisy['predict_ratio_vs_keras_noisy'] == 1.0
  assert noisy['predict_headline'].startswith('noisy') and noisy['predict_ratio_vs_keras_float32'] == 1.0
