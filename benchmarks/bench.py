"""Speed benchmark, run from the repository root:
python -m benchmarks.bench --config=configs/cnn.py [--keras] [--config.data.root=DATA].

Measures compile time, train-step images/s after warm-up on a synthetic batch, an epoch end to end on a real folder
(the grain loader included), eval images/s, the loader alone and peak RSS; with --keras it times the study's Keras
model (../shared/bench/seed_keras.py's model()) in child processes, one per keras.mixed_precision policy (float32
and mixed_bfloat16), interleaved with lungjax round by round (lungjax, Keras float32, Keras mixed_bfloat16, lungjax,
...), so that each round's ratios are taken under the same load. Each ratio is the median of the per-round ratios,
with its min-max and IQR; `ratio_vs_keras` is against the faster Keras policy and is written only when the per-round
ratios span at most --max_spread (0.2), else as `ratio_vs_keras_noisy` (both policies' ratios are kept). With
--predict_folder the same for lungjax predict (decode included) vs a Keras predict loop on the folder's files.
The load average is recorded before and after. Writes results/bench/<config.name>.json, one line per figure.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import contextlib  # pylint: disable=g-import-not-at-top,g-bad-import-order
import importlib.util
import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
# The study's Keras model, beside a developer's checkout (../shared/bench).
SEED_KERAS_MODEL = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'bench', 'seed_keras.py')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # Where `python -m benchmarks.bench` runs.


# The compilations jax reports, by function name, while counting (see count_compilations).
_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'


@contextlib.contextmanager
def count_compilations() -> Iterator[dict[str, list[float]]]:
  """Yields {function name: [backend compile seconds, ...]}, filled with every XLA compilation in the block.

  jax names a jitted function 'jit(train_step)'; the keys drop the 'jit(...)' around it.
  """
  compiles: dict[str, list[float]] = {}

  def listener(event: str, duration: float, **kwargs: Any) -> None:
    if event == _COMPILE_EVENT:
      name = str(kwargs.get('fun_name', '?'))
      compiles.setdefault(name.removeprefix('jit(').removesuffix(')'), []).append(duration)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield compiles
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def peak_rss_gb() -> float:
  """This process's peak resident set size so far, in GB."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def machine_info() -> dict[str, Any]:
  """CPU model, core count, load average and library versions: what the figures depend on."""
  cpu = platform.processor()
  with contextlib.suppress(OSError):
    with open('/proc/cpuinfo') as f:
      cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
  return {'cpu': cpu, 'cpu_count': os.cpu_count(), 'load_average_1_5_15': [round(x, 2) for x in os.getloadavg()],
          'platform': platform.platform(), 'python': platform.python_version(), 'jax': jax.__version__,
          'backend': jax.default_backend(), 'devices': [str(d) for d in jax.devices()],
          'XLA_FLAGS': os.environ.get('XLA_FLAGS', '')}


def synthetic_batch(batch_size: int, image_size: int, num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A random uint8 batch with labels: what the train step sees, without the loader."""
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (batch_size, image_size, image_size, 3), np.uint8),
          'label': (np.arange(batch_size) % num_classes).astype(np.int32)}


def images_per_s(n_images: int, seconds: float) -> float:
  """Rounded throughput."""
  return round(n_images / seconds, 2)


class LungjaxRunner:
  """The config's model, optimizer, jitted steps and a train state, as training builds them."""

  def __init__(self, config: ml_collections.ConfigDict, class_weights_C: np.ndarray):
    from lungjax import steps  # pylint: disable=g-import-not-at-top
    from lungjax.runtime import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
    from lungjax.models import create_model  # pylint: disable=g-import-not-at-top
    self.config = config
    self.mesh = mesh_lib.make_mesh()
    self.batch_sharding = mesh_lib.batch_sharded(self.mesh)
    self.model = create_model(config.model, len(config.data.classes))
    self.tx = steps.create_optimizer(config.train)
    options = steps.compiler_options(config.train.get('cpu_compiler_options', ''))
    self.compiler_options = options or {}
    self.train_step = steps.jit_train_step(self.model, self.tx, class_weights_C, self.mesh, compiler_options=options)
    self.eval_step = steps.jit_eval_step(self.model, self.mesh, compiler_options=options)
    self.state = steps.jit_create_train_state(self.model, self.tx, config.data.image_size, self.mesh)(
        jax.random.PRNGKey(config.seed))
    self.n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.state.params))

  def to_device(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Shards a host batch over the mesh."""
    from lungjax.runtime import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
    return mesh_lib.to_global_batch(batch, self.batch_sharding)

  def run_steps(self, batches: Callable[[], dict[str, jax.Array]], n: int) -> float:
    """Runs n train steps on batches() and returns the wall seconds, waiting for the last step's results."""
    start = time.perf_counter()
    for _ in range(n):
      self.state, metrics = self.train_step(self.state, batches())
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - start


class KerasChild:
  """The study's Keras model in a child process (its own TensorFlow), timed on request between lungjax rounds."""

  def __init__(self, model_file: str, batch_size: int, image_size: int, class_weights_C: np.ndarray,
               warmup_steps: int, policy: str = 'float32'):
    if policy not in KERAS_POLICIES:
      raise ValueError(f'--keras_policies: {policy!r} is not one of {KERAS_POLICIES}')
    self.policy = policy
    if not os.path.isfile(model_file):
      raise FileNotFoundError(f'--keras_model={model_file!r} does not exist (the study\'s seed_keras.py)')
    command = [sys.executable, '-m', 'benchmarks.bench', '--keras_worker',
               f'--keras_model={os.path.abspath(model_file)}']
    self.process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    self.info = self.request({'batch_size': batch_size, 'image_size': image_size, 'policy': policy,
                              'class_weights': [float(w) for w in class_weights_C], 'warmup_steps': warmup_steps})
    if 'error' in self.info:
      self.process.kill()  # It has said why it cannot time this model; nothing is left for it to do.
      self.process.wait()
      raise ValueError(self.info['error'])

  def request(self, message: dict[str, Any]) -> dict[str, Any]:
    """Sends one JSON request line and returns the child's JSON reply."""
    self.process.stdin.write(json.dumps(message) + '\n')
    self.process.stdin.flush()
    line = self.process.stdout.readline()
    if not line:
      raise RuntimeError(f'the Keras child process exited (code {self.process.wait()}); see its error above')
    return json.loads(line)

  def time_steps(self, n: int) -> float:
    """Wall seconds of n Keras train steps (train_on_batch, class weights) on its synthetic batch."""
    return self.request({'steps': n})['seconds']

  def time_predict(self, files: list[str], batch_size: int) -> float:
    """Wall seconds of a Keras predict loop over files: PIL decode + resize (as seed_keras.load), predict_on_batch."""
    return self.request({'predict_files': files, 'batch_size': batch_size})['seconds']

  def close(self) -> float:
    """Ends the child process and returns its peak RSS in GB."""
    self.process.stdin.close()
    line = self.process.stdout.readline()
    self.process.wait(timeout=60)
    return round(json.loads(line)['peak_rss_gb'], 3) if line else float('nan')


def keras_worker(model_file: str) -> None:
  """The --keras child: builds seed_keras.model() compiled as the study did, then times train steps on request.

  Requests are JSON lines on stdin: first the set-up (batch size, image size, class weights, warm-up steps), then
  {'steps': n}; each reply is one JSON line on stdout (TensorFlow's own output goes to stderr).
  """
  real_stdout = sys.stdout
  sys.stdout = sys.stderr  # Keep stray prints off the reply channel.
  spec = importlib.util.spec_from_file_location('seed_keras', model_file)
  seed_keras = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(seed_keras)
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def reply(message: dict[str, Any]) -> None:
    real_stdout.write(json.dumps(message) + '\n')
    real_stdout.flush()

  setup = json.loads(sys.stdin.readline())
  keras.utils.set_random_seed(0)
  keras.mixed_precision.set_global_policy(setup.get('policy', 'float32'))  # before the model's layers are made
  model = seed_keras.model()
  model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
  size, batch_size = setup['image_size'], setup['batch_size']
  if tuple(model.input_shape[1:3]) != (size, size):
    reply({'error': f'{model_file} builds a model for {model.input_shape[1:3]} images, the config has '
                    f'config.data.image_size={size}: compare at the Keras model\'s size'})
    return
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (batch_size, size, size, 3)).astype(np.float32) / 255.0  # As seed_keras feeds.
  labels = np.arange(batch_size) % len(setup['class_weights'])
  class_weight = dict(enumerate(setup['class_weights']))
  start = time.perf_counter()
  model.train_on_batch(images, labels, class_weight=class_weight)
  first_step_s = time.perf_counter() - start
  for _ in range(setup['warmup_steps']):
    model.train_on_batch(images, labels, class_weight=class_weight)
  reply({'params': int(model.count_params()), 'first_step_s': round(first_step_s, 2), 'keras': keras.__version__,
         'tensorflow': tf.__version__, 'backend': keras.backend.backend(),
         'policy': keras.mixed_precision.global_policy().name,
         'onednn': os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default (on)')})
  from PIL import Image  # pylint: disable=g-import-not-at-top

  def decode(path: str) -> np.ndarray:  # As seed_keras.load reads a file.
    with Image.open(path) as image:
      return np.asarray(image.convert('RGB').resize((size, size), Image.BILINEAR), np.float32) / 255.0

  for line in sys.stdin:
    request = json.loads(line)
    start = time.perf_counter()
    if 'predict_files' in request:
      files, chunk = request['predict_files'], request['batch_size']
      for first in range(0, len(files), chunk):
        model.predict_on_batch(np.stack([decode(f) for f in files[first:first + chunk]]))  # numpy: synchronous
    else:
      for _ in range(request['steps']):
        model.train_on_batch(images, labels, class_weight=class_weight)  # Returns numpy losses: synchronous.
    reply({'seconds': time.perf_counter() - start})
  reply({'peak_rss_gb': peak_rss_gb()})


KERAS_POLICIES = ('float32', 'mixed_bfloat16')  # keras.mixed_precision policies the --keras children can run
MAX_SPREAD = 0.2  # Wider per-round ratios (max - min) than this: the headline is written marked noisy.


def ratio_spread(ratios: list[float], max_spread: float = MAX_SPREAD) -> dict[str, Any]:
  """The median of per-round ratios, their min-max, quartiles and IQR; noisy when max - min > max_spread."""
  q1, median, q3 = (float(np.percentile(ratios, q)) for q in (25, 50, 75))
  spread = float(max(ratios) - min(ratios))
  return {'median': round(median, 3), 'min': round(min(ratios), 3), 'max': round(max(ratios), 3),
          'q1': round(q1, 3), 'q3': round(q3, 3), 'iqr': round(q3 - q1, 3), 'spread': round(spread, 3),
          'noisy': spread > max_spread}


def compare(result: dict[str, Any], what: str, ours: list[float], theirs: dict[str, list[float]],
            max_spread: float = MAX_SPREAD) -> None:
  """Adds, per Keras policy, its median img/s and the median of per-round ratios with their spread; then the
  headline `ratio_vs_keras` (vs the faster policy by median img/s), or `ratio_vs_keras_noisy` where its per-round
  ratios span more than max_spread. `what` prefixes the keys ('train', 'predict')."""
  prefix = '' if what == 'train' else f'{what}_'
  medians = {}
  for policy, rates in theirs.items():
    name = policy.removeprefix('mixed_')  # float32, bfloat16
    ratios = [a / b for a, b in zip(ours, rates)]
    medians[policy] = float(np.median(rates))
    result[f'keras_{name}_{what}_images_per_s'] = round(medians[policy], 2)
    result[f'keras_{name}_{what}_images_per_s_rounds'] = rates
    result[f'{prefix}ratio_vs_keras_{name}'] = ratio_spread(ratios, max_spread)['median']
    result[f'{prefix}ratio_vs_keras_{name}_rounds'] = [round(r, 3) for r in ratios]
    result[f'{prefix}ratio_vs_keras_{name}_spread'] = ratio_spread(ratios, max_spread)
  faster = max(medians, key=medians.get)
  stats = result[f'{prefix}ratio_vs_keras_{faster.removeprefix("mixed_")}_spread']
  result[f'keras_{what}_images_per_s'] = round(medians[faster], 2)
  result[f'keras_{what}_faster_policy'] = faster
  result[f'{prefix}ratio_vs_keras_rounds'] = result[f'{prefix}ratio_vs_keras_{faster.removeprefix("mixed_")}_rounds']
  if stats['noisy']:
    result[f'{prefix}ratio_vs_keras_noisy'] = stats['median']
    result[f'{prefix}headline'] = (f'noisy: per-round ratios vs Keras {faster} span {stats["min"]}-{stats["max"]} '
                                   f'(> {max_spread}); no headline figure, rerun on a quiet machine')
  else:
    result[f'{prefix}ratio_vs_keras'] = stats['median']
    result[f'{prefix}headline'] = (f'{stats["median"]}x Keras {faster} (median of {len(ours)} per-round ratios, '
                                   f'{stats["min"]}-{stats["max"]}, IQR {stats["iqr"]})')


def alternating_rounds(runner: LungjaxRunner, kerases: dict[str, KerasChild], rounds: int, n_steps: int,
                       batch_size: int, max_spread: float = MAX_SPREAD) -> dict[str, Any]:
  """Times n_steps lungjax steps, then n_steps steps of each Keras child in turn, `rounds` times: each round's
  ratios are taken under the same load; the headline is the median of per-round ratios (see compare)."""
  batch = runner.to_device(synthetic_batch(batch_size, runner.config.data.image_size,
                                           len(runner.config.data.classes)))
  ours, theirs = [], {policy: [] for policy in kerases}
  for index in range(rounds):
    ours.append(images_per_s(n_steps * batch_size, runner.run_steps(lambda: batch, n_steps)))
    line = f'round {index + 1}: lungjax {ours[-1]} img/s'
    for policy, keras in kerases.items():
      theirs[policy].append(images_per_s(n_steps * batch_size, keras.time_steps(n_steps)))
      line += f', keras {policy} {theirs[policy][-1]} img/s (ratio {ours[-1] / theirs[policy][-1]:.3f})'
    print(line, flush=True)
  result: dict[str, Any] = {'train_images_per_s': float(np.median(ours)), 'train_images_per_s_rounds': ours}
  if kerases:
    compare(result, 'train', ours, theirs, max_spread)
  return result


def predict_rounds(runner: LungjaxRunner, kerases: dict[str, KerasChild], folder: str, rounds: int,
                   max_spread: float = MAX_SPREAD) -> dict[str, Any]:
  """lungjax predict's images/s on every image file under folder (decode included: lungjax.tools.predict.predict_files
  with this run's model and state), alternating with each Keras child's predict loop on the same files."""
  from lungjax import inference  # pylint: disable=g-import-not-at-top
  from lungjax.tools import predict  # pylint: disable=g-import-not-at-top
  model = inference.Model(runner.config, runner.model, runner.state, 0, '')
  listed = predict.expand_inputs([folder])
  files = [path for path, _ in listed]
  batch_size = model.batch_size

  def ours_once() -> tuple[float, int]:
    start = time.perf_counter()
    lines = list(predict.predict_files(model, listed))
    return time.perf_counter() - start, sum('error' in line for line in lines)

  _, errors = ours_once()  # warm-up: compiles the eval step for this batch size
  if errors:
    raise ValueError(f'--predict_folder={folder!r}: lungjax could not read {errors} of {len(files)} files')
  for keras in kerases.values():
    keras.time_predict(files[:batch_size], batch_size)  # warm-up
  ours, theirs = [], {policy: [] for policy in kerases}
  for index in range(rounds):
    ours.append(images_per_s(len(files), ours_once()[0]))
    line = f'predict round {index + 1}: lungjax {ours[-1]} img/s'
    for policy, keras in kerases.items():
      theirs[policy].append(images_per_s(len(files), keras.time_predict(files, batch_size)))
      line += f', keras {policy} {theirs[policy][-1]} img/s'
    print(line, flush=True)
  result: dict[str, Any] = {'predict_folder': folder, 'predict_n_images': len(files),
                            'predict_batch_size': batch_size, 'predict_images_per_s': float(np.median(ours)),
                            'predict_images_per_s_rounds': ours}
  if kerases:
    compare(result, 'predict', ours, theirs, max_spread)
  return result


def real_folder_figures(runner: LungjaxRunner, config: ml_collections.ConfigDict, epochs: int) -> dict[str, Any]:
  """Decodes the real train folder, then times the loader alone, `epochs` training epochs and an eval pass."""
  from lungjax import evaluate  # pylint: disable=g-import-not-at-top
  from lungjax.data import loading, pipeline  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  data = loading.load_training_data(config)
  result: dict[str, Any] = {'data_root': config.data.root, 'n_train': len(data.train), 'n_val': len(data.val),
                            'decode_s': round(time.perf_counter() - start, 2)}
  batch_size = config.train.batch_size
  steps_per_epoch = len(data.train) // batch_size
  read_options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)  # As train.py reads.

  def dataset():
    return pipeline.train_dataset(data.train.images_NHWC, data.train.labels_N, global_batch_size=batch_size,
                                  num_epochs=epochs, seed=config.seed).to_iter_dataset(read_options)

  loader_rates = []
  iterator = iter(dataset())
  for _ in range(epochs):
    start = time.perf_counter()
    for _ in range(steps_per_epoch):
      next(iterator)
    loader_rates.append(images_per_s(steps_per_epoch * batch_size, time.perf_counter() - start))
  result['loader_images_per_s_epochs'] = loader_rates
  result['loader_images_per_s'] = loader_rates[-1]

  epoch_rates = []
  iterator = iter(dataset())
  for _ in range(epochs):
    seconds = runner.run_steps(lambda: runner.to_device(next(iterator)), steps_per_epoch)
    epoch_rates.append(images_per_s(steps_per_epoch * batch_size, seconds))
    print(f'epoch on {config.data.root}: {epoch_rates[-1]} img/s (loader included)', flush=True)
  result['epoch_images_per_s_epochs'] = epoch_rates
  result['epoch_images_per_s'] = epoch_rates[-1]

  eval_images = data.val if len(data.val) else data.train
  evaluate.predict_probabilities(runner.eval_step, runner.state, eval_images, config.eval.batch_size, runner.mesh)
  start = time.perf_counter()
  evaluate.predict_probabilities(runner.eval_step, runner.state, eval_images, config.eval.batch_size, runner.mesh)
  result['eval_images_per_s'] = images_per_s(len(eval_images), time.perf_counter() - start)
  result['eval_set'] = 'validation split' if len(data.val) else 'train split'
  return result


def benchmark(config: ml_collections.ConfigDict, *, keras_model: str | None, rounds: int, n_steps: int,
              warmup_steps: int, epochs: int, host_memory_trims: list[float] | None = None,
              keras_policies: tuple[str, ...] = KERAS_POLICIES, predict_folder: str = '',
              max_spread: float = MAX_SPREAD) -> dict[str, Any]:
  """Runs every measurement and returns the figures (see the module docstring).

  host_memory_trims: host_memory.apply's list of trim times, counted in the figures (None: glibc defaults).
  keras_policies: the Keras children (one per keras.mixed_precision policy), timed in turn after lungjax each round.
  predict_folder: a folder of images for the predict figures ('' : none).
  """
  trims = host_memory_trims if host_memory_trims is not None else []
  batch_size = config.train.batch_size
  class_weights_C = np.full(len(config.data.classes), 1.0, np.float32)  # Their values do not change the cost.
  result: dict[str, Any] = {'config': config.name, 'command': ' '.join(['python -m benchmarks.bench'] + sys.argv[1:]),
                            'batch_size': batch_size, 'image_size': config.data.image_size,
                            'model': config.model.to_dict(), 'machine_start': machine_info()}
  with count_compilations() as compiles:
    runner = LungjaxRunner(config, class_weights_C)
    result['compiler_options'] = runner.compiler_options
    result['n_params'] = runner.n_params
    result['keep_freed_host_memory_gb'] = config.train.get('keep_freed_host_memory_gb', 0.0)
    if 'conv_impl' in config.model:  # what 'auto' became on this machine (chosen when the model was built)
      result['lowering'] = {'conv_impl': runner.model.conv_impl, 'pool_impl': runner.model.pool_impl}
    batch = runner.to_device(synthetic_batch(batch_size, config.data.image_size, len(config.data.classes)))
    result['first_train_step_s'] = round(runner.run_steps(lambda: batch, 1), 2)  # Trace + compile + one step.
    result['compile_train_s'] = round(sum(compiles.get('train_step', [0.0])), 4)
    runner.run_steps(lambda: batch, warmup_steps)
    if 'conv_impl' in config.model:
      from lungjax.models import choose_lowering  # pylint: disable=g-import-not-at-top
      lowering = choose_lowering(str(config.model.conv_impl), str(config.model.pool_impl), str(config.model.dtype))
      result['lowering'].update(conv_compute=lowering.conv_compute, why=lowering.reason)
    kerases: dict[str, KerasChild] = {}
    trims_before_rounds = len(trims)
    try:
      if keras_model:
        for policy in keras_policies:
          kerases[policy] = KerasChild(keras_model, batch_size, config.data.image_size, class_weights_C,
                                       warmup_steps, policy)
        result['keras'] = {policy: keras.info for policy, keras in kerases.items()}
      result.update(alternating_rounds(runner, kerases, rounds, n_steps, batch_size, max_spread))
      result['host_memory_trims_in_rounds'] = len(trims) - trims_before_rounds
      if predict_folder:
        result.update(predict_rounds(runner, kerases, predict_folder, rounds, max_spread))
    finally:
      for policy, keras in kerases.items():
        result['keras'][policy]['peak_rss_gb'] = keras.close()
    if config.data.root:
      result.update(real_folder_figures(runner, config, epochs))
      result['loader_vs_train_step'] = round(result['loader_images_per_s'] / result['train_images_per_s'], 2)
    else:
      result['real_folder'] = 'not measured: pass --config.data.root=DATA for the epoch, eval and loader figures'
  # To 0.1 ms: read back from a persistent XLA cache (as the test session's), a compile takes a few ms.
  result['compile_eval_s'] = round(sum(compiles.get('eval_step', [0.0])), 4)
  result['compilations'] = {name: len(compiles.get(name, [])) for name in ('train_step', 'eval_step')}
  result['peak_rss_gb'] = round(peak_rss_gb(), 3)
  result['host_memory_trims'] = len(trims)
  result['machine_end'] = {'load_average_1_5_15': [round(x, 2) for x in os.getloadavg()]}
  return result


_FIGURES = ('n_params', 'lowering', 'first_train_step_s', 'compile_train_s', 'compile_eval_s', 'train_images_per_s',
            'keras_float32_train_images_per_s', 'keras_bfloat16_train_images_per_s', 'ratio_vs_keras_float32',
            'ratio_vs_keras_bfloat16', 'ratio_vs_keras', 'ratio_vs_keras_noisy', 'headline',
            'predict_images_per_s', 'keras_float32_predict_images_per_s', 'keras_bfloat16_predict_images_per_s',
            'predict_ratio_vs_keras', 'predict_ratio_vs_keras_noisy', 'predict_headline', 'epoch_images_per_s',
            'eval_images_per_s', 'loader_images_per_s', 'loader_vs_train_step', 'compilations', 'peak_rss_gb',
            'host_memory_trims', 'machine_start', 'machine_end')


def main(argv):
  del argv
  if FLAGS.keras_worker:
    keras_worker(FLAGS.keras_model)
    return
  if FLAGS.config is None:
    raise app.UsageError('--config is required (e.g. --config=configs/cnn.py)')
  from lungjax.cpu import host_memory  # pylint: disable=g-import-not-at-top
  trims = host_memory.apply(FLAGS.config.train)  # As lungjax.main does, before the first large allocation.
  policies = tuple(p.strip() for p in FLAGS.keras_policies.split(',') if p.strip())
  for policy in policies:
    if policy not in KERAS_POLICIES:
      raise app.UsageError(f'--keras_policies: {policy!r} is not one of {KERAS_POLICIES}')
  if FLAGS.keras and not policies:
    raise app.UsageError('--keras needs at least one of --keras_policies')
  if FLAGS.predict_folder and not os.path.isdir(FLAGS.predict_folder):
    raise app.UsageError(f'--predict_folder={FLAGS.predict_folder!r} is not a folder')
  result = benchmark(FLAGS.config, keras_model=FLAGS.keras_model if FLAGS.keras else None, rounds=FLAGS.rounds,
                     n_steps=FLAGS.steps, warmup_steps=FLAGS.warmup_steps, epochs=FLAGS.epochs,
                     host_memory_trims=trims, keras_policies=policies, predict_folder=FLAGS.predict_folder,
                     max_spread=FLAGS.max_spread)
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  path = os.path.join(FLAGS.out_dir, f'{FLAGS.config.name}.json')
  from lungjax.runtime import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  try:  # Atomic: a reader sees the old figures or the new ones; never through a link.
    workdir_lib.write_atomic(path, json.dumps(result, indent=2))
  except FileExistsError as e:
    raise app.UsageError(str(e)) from e
  for name in _FIGURES:
    if name in result:
      print(f'{name}: {result[name]}')
  print(f'wrote {path}')


if __name__ == '__main__':  # The command's flags, defined only when run: an importer keeps lungjax.main's --config.
  config_flags.DEFINE_config_file('config', None, 'A configs/*.py file; override fields as --config.a.b=value.',
                                  lock_config=True)
  flags.DEFINE_bool('keras', False, "Also time the study's Keras model, alternating with lungjax round by round.")
  flags.DEFINE_string('keras_model', SEED_KERAS_MODEL, 'The file whose model() is the Keras model.')
  flags.DEFINE_integer('rounds', 3, 'Alternating timing rounds (lungjax, then each Keras policy).')
  flags.DEFINE_string('keras_policies', ','.join(KERAS_POLICIES),
                      'Comma-separated keras.mixed_precision policies, one Keras child each (float32, mixed_bfloat16).')
  flags.DEFINE_string('predict_folder', '', 'A folder of images: lungjax predict (decode included) vs a Keras '
                      'predict loop on its files, alternating (e.g. ../shared/data/covid19-radiography-sample).')
  flags.DEFINE_float('max_spread', MAX_SPREAD, 'Per-round ratios spanning more (max - min): the headline is noisy.')
  flags.DEFINE_integer('steps', 5, 'Timed train steps per round, after warm-up.')
  flags.DEFINE_integer('warmup_steps', 2, 'Untimed train steps before the first round.')
  flags.DEFINE_integer('epochs', 2, 'Epochs on the real folder (the loader figures quote the last).')
  flags.DEFINE_string('out_dir', 'results/bench', 'Where <config.name>.json goes.')
  flags.DEFINE_bool('keras_worker', False, 'Internal: serve Keras timing requests on stdin (the --keras child).')
  app.run(main)
