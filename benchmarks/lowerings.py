"""The study config's train step under each conv / pool lowering and the Keras model, alternating in one process.

Run from the repository root (about 5 minutes on 2 cores):
  python -m benchmarks.lowerings
Writes results/bench/lowerings.json: per lowering the median train images/s over the rounds, each round's figure,
and the ratio to the kernels' step measured in the same round (and to Keras, in its child process).
"""

import json
import time

import numpy as np

from benchmarks import bench
from configs import cnn
from lungjax.cpu import host_memory

LOWERINGS = (('blas', 'cpu_kernel'), ('blas', 'reshape'), ('xla', 'cpu_kernel'), ('xla', 'reshape'))
ROUNDS, STEPS, WARMUP = 5, 4, 2


def main() -> None:
  """Builds one runner per lowering and the Keras child, then times STEPS steps of each, ROUNDS times in turn."""
  base = cnn.get_config()
  host_memory.apply(base.train)  # as lungjax.main does
  class_weights_C = np.ones(len(base.data.classes), np.float32)
  batch = bench.synthetic_batch(base.train.batch_size, base.data.image_size, len(base.data.classes))
  runners = {}
  for conv_impl, pool_impl in LOWERINGS:
    config = cnn.get_config()
    config.model.conv_impl, config.model.pool_impl = conv_impl, pool_impl
    runner = bench.LungjaxRunner(config, class_weights_C)
    device_batch = runner.to_device(batch)
    runner.run_steps(lambda b=device_batch: b, WARMUP)
    runners[f'{conv_impl}+{pool_impl}'] = (runner, device_batch)
  keras = bench.KerasChild(bench.SEED_KERAS_MODEL, base.train.batch_size, base.data.image_size, class_weights_C,
                           WARMUP)
  per_round = {name: [] for name in [*runners, 'keras']}
  for _ in range(ROUNDS):
    for name, (runner, device_batch) in runners.items():
      per_round[name].append(STEPS * base.train.batch_size / runner.run_steps(lambda b=device_batch: b, STEPS))
    per_round['keras'].append(STEPS * base.train.batch_size / keras.time_steps(STEPS))
  keras.close()
  reference = per_round['blas+cpu_kernel']
  result = {'command': 'python -m benchmarks.lowerings', 'date': time.strftime('%Y-%m-%d %H:%M'),
            'machine': bench.machine_info(), 'rounds': ROUNDS, 'steps_per_round': STEPS,
            'batch_size': base.train.batch_size, 'lowerings': {}}
  for name, values in per_round.items():
    result['lowerings'][name] = {
        'train_images_per_s': round(float(np.median(values)), 2),
        'train_images_per_s_rounds': [round(v, 2) for v in values],
        'vs_kernels_median_of_rounds': round(float(np.median(np.array(values) / np.array(reference))), 3)}
    print(f"{name:18s} {result['lowerings'][name]}")
  with open('results/bench/lowerings.json', 'w') as f:
    json.dump(result, f, indent=2)
  print('wrote results/bench/lowerings.json')


if __name__ == '__main__':
  main()
