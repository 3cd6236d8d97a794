"""Scale check of prepared data: generate N full-size JPEGs, prepare them, read an epoch, train a few steps.

python -m benchmarks.scale_check --config=configs/cnn.py --work=/tmp/lungjax-scale --sizes=2000,20000 \
    --out=results/bench/scale.json  # From the repository root.

For each N, every phase runs in its own process so that its peak RSS (VmHWM) is its own: `prepare` (decode N
files once into array_record), then `read` (the index and the grouped split, a loader-only epoch over all N
images as train.py builds it, then --train_steps steps of config's model and --eval_batches validation batches).
`raw` decodes the smallest N from the JPEG folders the way a run without prepared data does (all pixels in RAM),
and `baseline` only imports what `read` imports. The images are synthetic (smooth grey fields with film grain,
RGB JPEG, about the real set's median size and bytes per pixel) and go under --work, never into the repository.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # pylint: disable=g-import-not-at-top
from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
from PIL import Image  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS


CLASSES_OF_SCALE = ('Covid', 'Normal', 'Viral Pneumonia')
_NOISE_SIDE = 1800


def memory_mb() -> dict[str, float]:
  """This process's current and peak resident set size (VmRSS, VmHWM) in MiB."""
  values = {}
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(('VmRSS:', 'VmHWM:')):
        key, kb = line.split()[:2]
        values['rss_mb' if key == 'VmRSS:' else 'peak_rss_mb'] = round(int(kb) / 1024, 1)
  return values


def synthetic_xray(index: int, noise_HW: np.ndarray) -> Image.Image:
  """A smooth random grey field with film grain, RGB, about 1300-1700 x 1150-1450 px (image `index`, seeded)."""
  rng = np.random.default_rng(index)
  width, height = int(rng.integers(1300, 1700)), int(rng.integers(1150, 1450))
  low = (rng.random((20, 24)) * 170 + 40).astype(np.uint8)
  field = np.asarray(Image.fromarray(low).resize((width, height), Image.Resampling.BICUBIC), np.int16)
  top, left = int(rng.integers(0, _NOISE_SIDE - height)), int(rng.integers(0, _NOISE_SIDE - width))
  grey = Image.fromarray(np.clip(field + noise_HW[top:top + height, left:left + width], 0, 255).astype(np.uint8))
  return Image.merge('RGB', (grey, grey, grey))


def _write_range(args: tuple[str, int, int]) -> None:
  """Writes images start..stop-1 of a generated folder (one worker's share)."""
  root, start, stop = args
  noise_HW = np.random.default_rng(12345).normal(0, 3, (_NOISE_SIDE, _NOISE_SIDE)).astype(np.int16)
  for index in range(start, stop):
    class_name = CLASSES_OF_SCALE[index % len(CLASSES_OF_SCALE)]
    synthetic_xray(index, noise_HW).save(os.path.join(root, 'train', class_name, f'{index:06d}.jpg'), quality=90)


def generate(root: str, n: int, workers: int) -> float:
  """Writes n synthetic JPEGs under root/train/<class>/ unless already there; returns the seconds it took."""
  done = os.path.join(root, f'.complete_{n}')
  if os.path.exists(done):
    return 0.0
  for class_name in CLASSES_OF_SCALE:
    os.makedirs(os.path.join(root, 'train', class_name), exist_ok=True)
  start = time.perf_counter()
  chunks = [(root, i, min(i + 500, n)) for i in range(0, n, 500)]
  with multiprocessing.get_context('spawn').Pool(workers) as pool:
    pool.map(_write_range, chunks)
  open(done, 'w').close()
  return time.perf_counter() - start


def subset_root(full_root: str, root: str, n: int) -> None:
  """Makes root/train/<class>/ hold symlinks to the first n generated images (same class balance)."""
  for index in range(n):
    class_name = CLASSES_OF_SCALE[index % len(CLASSES_OF_SCALE)]
    os.makedirs(os.path.join(root, 'train', class_name), exist_ok=True)
    link = os.path.join(root, 'train', class_name, f'{index:06d}.jpg')
    if not os.path.lexists(link):
      os.symlink(os.path.join(full_root, 'train', class_name, f'{index:06d}.jpg'), link)


def _bytes_per_pixel(folder: str, n: int = 30) -> float:
  """The mean file bytes per pixel of the first n images of a folder."""
  paths = [os.path.join(folder, name) for name in sorted(os.listdir(folder))[:n]]
  pixels = 0
  for path in paths:
    with Image.open(path) as image:
      pixels += image.size[0] * image.size[1]
  return round(sum(os.path.getsize(p) for p in paths) / pixels, 3)


def _phase_config(config, root: str, prepared_dir: str):
  config = copy.deepcopy(config)
  config.data.root, config.data.prepared_dir = root, prepared_dir
  return config


def run_prepare(config) -> dict[str, Any]:
  """Phase `prepare`: decodes the root once into array_record files."""
  from lungjax.data import prepared  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  summary = prepared.prepare(config)
  seconds = time.perf_counter() - start
  if summary['reused']:
    raise RuntimeError(f'{summary["data_dir"]} was already prepared: remove it to measure preparing')
  n = summary['splits']['train']['n_images']
  return {'seconds': round(seconds, 1), 'images_per_s': round(n / seconds, 1), 'n_images': n,
          'n_shards': summary['splits']['train']['n_shards'], **memory_mb()}


def run_read(config, train_steps: int, eval_batches: int) -> dict[str, Any]:
  """Phase `read`: index + split, a loader-only epoch over every image, then train steps and eval batches."""
  import grain  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  from lungjax import steps  # pylint: disable=g-import-not-at-top
  from lungjax.runtime import mesh as mesh_lib  # pylint: disable=g-import-not-at-top,g-multiple-import
  from lungjax.data import batches as batches_lib, loading, pipeline  # pylint: disable=g-import-not-at-top
  from lungjax.models import create_model  # pylint: disable=g-import-not-at-top

  result: dict[str, Any] = {'after_imports': memory_mb()}
  start = time.perf_counter()
  data = loading.load_training_data(config)
  n = len(data.train) + len(data.val)
  result['index_and_split'] = {'seconds': round(time.perf_counter() - start, 1), 'n_images': n,
                               'n_train': len(data.train), 'n_val': len(data.val), **memory_mb()}
  batch_size = config.train.batch_size
  everything = data.train_folder.decoded
  dataset = pipeline.train_dataset(everything.images_NHWC, everything.labels_N, global_batch_size=batch_size,
                                   num_epochs=1, seed=config.seed)
  start, seen = time.perf_counter(), 0
  for batch in dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)):
    seen += len(batch['label'])
  seconds = time.perf_counter() - start
  result['loader_epoch'] = {'what': f'every one of the {n} prepared images once, in shuffled batches of '
                                    f'{batch_size} (train.py\'s grain pipeline and read options), no model',
                            'images': seen, 'seconds': round(seconds, 1), 'images_per_s': round(seen / seconds, 1),
                            **memory_mb()}
  train_steps = min(train_steps, len(data.train) // batch_size - 1)  # One more batch compiles.
  eval_batches = min(eval_batches, -(-len(data.val) // config.eval.batch_size) - 1)
  if train_steps > 0:
    mesh = mesh_lib.make_mesh()
    model = create_model(config.model, len(config.data.classes))
    tx = steps.create_optimizer(config.train)
    state = steps.jit_create_train_state(model, tx, config.data.image_size, mesh)(jax.random.PRNGKey(config.seed))
    train_step = steps.jit_train_step(model, tx, batches_lib.class_weights(data.train.labels_N, config), mesh)
    sharding = mesh_lib.batch_sharded(mesh)
    batches = iter(pipeline.train_dataset(data.train.images_NHWC, data.train.labels_N, global_batch_size=batch_size,
                                          num_epochs=1, seed=config.seed).to_iter_dataset(
                                              grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)))
    state, metrics = train_step(state, mesh_lib.to_global_batch(next(batches), sharding))  # Compiles.
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(train_steps):
      state, metrics = train_step(state, mesh_lib.to_global_batch(next(batches), sharding))
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    result['train_steps'] = {
        'what': f'{train_steps} train steps of model {config.model.name} at {config.data.image_size} px, batch '
                f'{batch_size}, from the prepared train split (after one compiling step); not a full epoch',
        'steps': train_steps, 'seconds': round(seconds, 1),
        'images_per_s': round(train_steps * batch_size / seconds, 2),
        'full_epoch_estimate_s': round(len(data.train) / (train_steps * batch_size / seconds), 0), **memory_mb()}
  if train_steps > 0 and eval_batches > 0:
    eval_step = steps.jit_eval_step(model, mesh)
    eval_batches_iter = iter(pipeline.eval_dataset(data.val.images_NHWC, data.val.labels_N,
                                                   global_batch_size=config.eval.batch_size))
    probabilities = eval_step(state, mesh_lib.to_global_batch(next(eval_batches_iter), sharding))
    jax.block_until_ready(probabilities)
    start = time.perf_counter()
    for _ in range(eval_batches):
      probabilities = eval_step(state, mesh_lib.to_global_batch(next(eval_batches_iter), sharding))
    jax.block_until_ready(probabilities)
    seconds = time.perf_counter() - start
    result['eval_batches'] = {'what': f'{eval_batches} padded validation batches (after one compiling batch)',
                              'seconds': round(seconds, 1),
                              'images_per_s': round(eval_batches * config.eval.batch_size / seconds, 1),
                              **memory_mb()}
  return result


def run_raw(config) -> dict[str, Any]:
  """Phase `raw`: decodes the JPEG folder into memory as a run without prepared data does."""
  from lungjax.data import loading  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  data = loading.load_training_data(config)
  n = len(data.train) + len(data.val)
  return {'what': 'loading.load_training_data from the JPEG folders: every image decoded and held in RAM',
          'n_images': n, 'seconds': round(time.perf_counter() - start, 1),
          'pixels_in_ram_mb': round(data.train_folder.decoded.images_NHWC.nbytes / 2**20, 1), **memory_mb()}


def run_baseline() -> dict[str, Any]:
  """Phase `baseline`: the imports of `read`, nothing else."""
  import grain  # pylint: disable=g-import-not-at-top,unused-import
  import jax  # pylint: disable=g-import-not-at-top,unused-import

  from lungjax import steps, train  # pylint: disable=g-import-not-at-top,g-multiple-import,unused-import
  from lungjax.data import loading, prepared  # pylint: disable=g-import-not-at-top,unused-import

  return memory_mb()


def _phase(phase: str, root: str, prepared_dir: str, extra: list[str]) -> tuple[dict[str, Any], str]:
  """Runs one phase in a fresh process and returns its JSON result and its command."""
  command = [sys.executable, '-m', 'benchmarks.scale_check', f'--phase={phase}', f'--config={_config_path()}',
             f'--root={root}', f'--prepared_dir={prepared_dir}', *extra, *_config_overrides()]
  done = subprocess.run(command, check=False, capture_output=True, text=True)
  if done.returncode:
    raise RuntimeError(f'phase {phase} failed ({" ".join(command)}):\n{done.stderr[-3000:]}')
  return json.loads(done.stdout.strip().splitlines()[-1]), ' '.join(command[1:])


def _config_path() -> str:
  return next(a.split('=', 1)[1] for a in sys.argv if a.startswith('--config='))


def _config_overrides() -> list[str]:
  return [a for a in sys.argv[1:] if a.startswith('--config.')]


def run_all(config) -> dict[str, Any]:
  """Generates the images, then runs every phase at every size; returns the report."""
  sizes = sorted(int(s) for s in FLAGS.sizes)
  full_root = os.path.join(FLAGS.work, f'images_{sizes[-1]}')
  generate_s = generate(full_root, sizes[-1], FLAGS.generate_workers)
  report: dict[str, Any] = {
      'what': ('Prepared-data scale check on synthetic full-size JPEGs: each phase in its own process; rss_mb is '
               'VmRSS at the end of a stage, peak_rss_mb the process\'s VmHWM so far. The train figures are a few '
               'steps, not an epoch (full_epoch_estimate_s extrapolates them); the loader epoch reads every image.'),
      'machine': {'cpus': os.cpu_count(), 'python': platform.python_version(), 'load_note':
                  '2 shared cores, run under nice -n 10 while other jobs may run: seconds are noisy, RSS is not'},
      'config': {'name': config.name, 'image_size': config.data.image_size, 'batch_size': config.train.batch_size,
                 'model': config.model.name, 'val_fraction': config.data.val_fraction},
      'images': {'kind': 'synthetic RGB JPEG (quality 90), smooth grey field + grain, 1300-1700 x 1150-1450 px',
                 'generated': sizes[-1], 'generate_seconds': round(generate_s, 1) if generate_s else 'reused',
                 'bytes_per_pixel': _bytes_per_pixel(os.path.join(full_root, 'train', CLASSES_OF_SCALE[0]))},
      'baseline': _phase('baseline', '', '', [])[0], 'sizes': {}, 'commands': {}}
  for n in sizes:
    root = full_root if n == sizes[-1] else os.path.join(FLAGS.work, f'images_{n}')
    if n != sizes[-1]:
      subset_root(full_root, root, n)
    prepared_dir = os.path.join(FLAGS.work, f'prepared_{n}')
    if os.path.exists(prepared_dir):
      subprocess.run(['rm', '-rf', prepared_dir], check=True)
    entry = {}
    entry['prepare'], report['commands'][f'prepare_{n}'] = _phase('prepare', root, prepared_dir, [])
    entry['read'], report['commands'][f'read_{n}'] = _phase(
        'read', root, prepared_dir, [f'--train_steps={FLAGS.train_steps}', f'--eval_batches={FLAGS.eval_batches}'])
    report['sizes'][str(n)] = entry
    print(json.dumps({str(n): entry}), flush=True)
  report['raw_folder_reference'], report['commands']['raw'] = _phase('raw', os.path.join(
      FLAGS.work, f'images_{sizes[0]}') if len(sizes) > 1 else full_root, '', [])
  small, large = (report['sizes'][str(s)] for s in (sizes[0], sizes[-1]))
  report['rss_growth'] = {
      'images_ratio': sizes[-1] / sizes[0],
      'prepare_peak_rss_ratio': round(large['prepare']['peak_rss_mb'] / small['prepare']['peak_rss_mb'], 3),
      'loader_epoch_peak_rss_ratio': round(large['read']['loader_epoch']['peak_rss_mb'] /
                                           small['read']['loader_epoch']['peak_rss_mb'], 3),
      'read_peak_rss_ratio': round(max(v.get('peak_rss_mb', 0) for v in large['read'].values()) /
                                   max(v.get('peak_rss_mb', 0) for v in small['read'].values()), 3),
      'raw_pixels_mb_per_image': round(report['raw_folder_reference']['pixels_in_ram_mb'] /
                                       report['raw_folder_reference']['n_images'], 4)}
  return report


def main(argv):
  del argv
  config = FLAGS.config
  if FLAGS.phase == 'all':
    report = run_all(config)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, 'w') as f:
      json.dump(report, f, indent=2)
    print(json.dumps(report['rss_growth'], indent=2))
    return
  if FLAGS.phase == 'baseline':
    result = run_baseline()
  elif FLAGS.phase == 'raw':
    result = run_raw(_phase_config(config, FLAGS.root, ''))
  elif FLAGS.phase == 'prepare':
    result = run_prepare(_phase_config(config, FLAGS.root, FLAGS.prepared_dir))
  else:
    result = run_read(_phase_config(config, FLAGS.root, FLAGS.prepared_dir), FLAGS.train_steps, FLAGS.eval_batches)
  print(json.dumps(result))


if __name__ == '__main__':  # The command's flags, defined only when run: an importer keeps lungjax.main's --config.
  config_flags.DEFINE_config_file('config', None, 'The run config whose data, model and batch size are measured.',
                                  lock_config=True)
  flags.DEFINE_string('work', '/tmp/lungjax-scale', 'Where the generated images and prepared data go.')
  flags.DEFINE_list('sizes', ['2000', '20000'], 'Numbers of images to measure; the largest is generated.')
  flags.DEFINE_integer('train_steps', 30, 'Train steps measured after the loader epoch (0: none).')
  flags.DEFINE_integer('eval_batches', 10, 'Validation batches measured after the train steps.')
  flags.DEFINE_integer('generate_workers', 2, 'Processes that write the synthetic JPEGs.')
  flags.DEFINE_string('out', None, 'The JSON file to write.')
  flags.DEFINE_enum('phase', 'all', ['all', 'prepare', 'read', 'raw', 'baseline'], 'Internal: one measured phase.')
  flags.DEFINE_string('root', '', 'Internal: the data root of a phase.')
  flags.DEFINE_string('prepared_dir', '', 'Internal: the prepared data of a phase.')
  app.run(main)
