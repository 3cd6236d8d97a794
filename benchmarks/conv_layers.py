"""Each conv layer of the study's CNN alone (batch 16): XLA's ops, lungjax's C++ kernels, TensorFlow's oneDNN kernels.

Run from the repository root (about 2 minutes on 2 cores):
  python -m benchmarks.conv_layers
Writes results/bench/conv_layers.json: per layer the median ms of the conv forward, input gradient and kernel
gradient, and of the gradient of relu + 2x2 max-pool (+ bias for XLA, whose bias gradient is a separate reduce;
the kernels sum it inside the kernel gradient). TensorFlow runs in a child process (its own thread pool); the JAX
side runs under the study config's host memory policy (lungjax/host_memory.py), as lungjax.main does.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np

LAYERS = (((16, 256, 256, 3), 32), ((16, 128, 128, 32), 64), ((16, 64, 64, 64), 128))
REPEATS = 7


def _median_ms(run) -> float:
  """Median wall ms of run() over REPEATS calls after one warm-up call."""
  run()
  times = []
  for _ in range(REPEATS):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return round(float(np.median(times)) * 1e3, 1)


def tensorflow_layers() -> list[dict[str, float]]:
  """TensorFlow's Conv2D and its two backprop ops per layer (oneDNN on x86 by default)."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rows = []
  for x_shape, features in LAYERS:
    x = tf.random.normal(x_shape)
    w = tf.random.normal((3, 3, x_shape[-1], features))
    dy = tf.random.normal(x_shape[:3] + (features,))
    forward = tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, 'SAME'))
    input_grad = tf.function(lambda w, dy, s=x_shape: tf.raw_ops.Conv2DBackpropInput(
        input_sizes=s, filter=w, out_backprop=dy, strides=[1, 1, 1, 1], padding='SAME'))
    kernel_grad = tf.function(lambda x, dy, s=tuple(w.shape): tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=s, out_backprop=dy, strides=[1, 1, 1, 1], padding='SAME'))
    rows.append({'forward_ms': _median_ms(lambda: forward(x, w).numpy()),
                 'input_grad_ms': _median_ms(lambda: input_grad(w, dy).numpy()),
                 'kernel_grad_ms': _median_ms(lambda: kernel_grad(x, dy).numpy())})
  return rows


def jax_layers(use_kernels: bool) -> list[dict[str, float]]:
  """The same three ops per layer through lax (YNNPACK fusions off, as the study config) or the C++ kernels."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from lungjax.cpu import kernels as cpu  # pylint: disable=g-import-not-at-top
  from lungjax.models import layers  # pylint: disable=g-import-not-at-top
  options = {'xla_cpu_experimental_ynn_fusion_type': ''}
  pads = ((1, 1), (1, 1))
  if use_kernels:
    conv = lambda x, w, b: cpu.conv_bias(x, w, b, pads)
    relu_pool = cpu.relu_max_pool
  else:
    conv = lambda x, w, b: jax.lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=(
        'NHWC', 'HWIO', 'NHWC')) + b
    relu_pool = lambda z: layers.reshape_max_pool(jax.nn.relu(z))
  rows = []
  for x_shape, features in LAYERS:
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(keys[0], x_shape)
    w = jax.random.normal(keys[1], (3, 3, x_shape[-1], features))
    b = jnp.zeros(features)
    dy = jax.random.normal(keys[2], x_shape[:3] + (features,))
    dy_pooled = dy[:, ::2, ::2, :]
    compile_ = lambda f, *args: jax.jit(f).lower(*args).compile(options)
    forward = compile_(conv, x, w, b)
    input_grad = compile_(lambda w, b, dy: jax.vjp(lambda x: conv(x, w, b), x)[1](dy)[0], w, b, dy)
    kernel_grad = compile_(lambda x, dy: jax.vjp(lambda w, b: conv(x, w, b), w, b)[1](dy), x, dy)
    # relu + pool gradient, and the bias gradient where XLA computes it as its own reduce.
    pool_grad = compile_(lambda z, g: (jax.vjp(relu_pool, z)[1](g)[0],) + (() if use_kernels else (
        jax.vjp(relu_pool, z)[1](g)[0].sum((0, 1, 2)),)), dy, dy_pooled)
    rows.append({'forward_ms': _median_ms(lambda: forward(x, w, b).block_until_ready()),
                 'input_grad_ms': _median_ms(lambda: input_grad(w, b, dy).block_until_ready()),
                 'kernel_grad_ms': _median_ms(lambda: jax.block_until_ready(kernel_grad(x, dy))),
                 'relu_pool_grad_ms': _median_ms(lambda: jax.block_until_ready(pool_grad(dy, dy_pooled)))})
  return rows


def main() -> None:
  """Times XLA and the kernels here, TensorFlow in a child, and writes the JSON."""
  if sys.argv[1:] == ['--tensorflow']:
    print(json.dumps(tensorflow_layers()))
    return
  from configs import cnn  # pylint: disable=g-import-not-at-top
  from lungjax.cpu import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.apply(cnn.get_config().train)  # the study config's host memory policy, as lungjax.main applies it
  child = subprocess.run([sys.executable, '-m', 'benchmarks.conv_layers', '--tensorflow'], capture_output=True,
                         text=True, check=True, timeout=600)
  result = {'command': 'python -m benchmarks.conv_layers', 'date': time.strftime('%Y-%m-%d %H:%M'),
            'layers': [{'input': list(x_shape), 'features': features} for x_shape, features in LAYERS],
            'load_average_start': list(os.getloadavg()),
            'xla': jax_layers(use_kernels=False), 'kernels': jax_layers(use_kernels=True),
            'tensorflow_onednn': json.loads(child.stdout.strip().splitlines()[-1]),
            'load_average_end': list(os.getloadavg()),
            'note': 'the first layer input gradient is never computed in training (its input is the image)'}
  for name in ('xla', 'kernels', 'tensorflow_onednn'):
    print(name, result[name])
  with open('results/bench/conv_layers.json', 'w') as f:
    json.dump(result, f, indent=2)
  print('wrote results/bench/conv_layers.json')


if __name__ == '__main__':
  main()
