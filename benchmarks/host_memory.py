"""lungjax's host-memory policy beside the no-code alternatives, on the study CNN's train step (XLA:CPU).

Each variant runs in fresh child processes (an allocator is chosen when a process starts), one child per variant per
round, the variants interleaved (their order rotates each round) so that a busy machine slows them alike:
  glibc-defaults   config.train.keep_freed_host_memory_gb=0: glibc's malloc as it comes
  lungjax-policy   keep_freed_host_memory_gb=2.2 (configs/cnn.py's): lungjax.cpu.host_memory's mallopt settings
                   plus its watcher thread, which hands free pages back above 2.2 GB of RSS
  glibc-tunables   GLIBC_TUNABLES with the policy's three mallopt settings (mmap_max=0, trim_threshold=2^31-1,
                   arena_max=1), no code and no watcher (so no RSS cap). glibc.malloc.mmap_threshold=4294967296
                   does what mmap_max=0 does for a step's buffers (<= 134 MB): on glibc 2.36 either makes five
                   malloc / write / free rounds of 64 MB fault in 1 page instead of 81,925.
  jemalloc         LD_PRELOAD=libjemalloc.so.2 (Debian: apt-get install libjemalloc2), glibc defaults otherwise
  tcmalloc         LD_PRELOAD=libtcmalloc_minimal.so.4 (Debian: apt-get install libtcmalloc-minimal4)
A child builds configs/cnn.py's model (the 'auto' lowering, YNNPACK fusions off, as training does) at --image_size
px and --batch_size, runs --warmup_steps train steps on a synthetic batch, then times --steps steps; it reports
images/s, minor page faults per timed step, the watcher's trims and its peak RSS.

Run from the repository root, on a quiet machine:
  python -m benchmarks.host_memory --rounds=5 --steps=20
Writes results/bench/host_memory.json (per variant: the median images/s of the rounds, each round's figure, the
median of per-round ratios to glibc-defaults and to lungjax-policy, peak RSS) and results/bench/host_memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

POLICY_GB = 2.2  # configs/cnn.py's config.train.keep_freed_host_memory_gb.
# lungjax.cpu.host_memory's mallopt settings (M_MMAP_MAX=0, M_TRIM_THRESHOLD=2**31-1, M_ARENA_MAX=1) as tunables.
POLICY_TUNABLES = 'glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647:glibc.malloc.arena_max=1'
# Simplest first: nothing, an environment variable, a system package, lungjax's own code.
VARIANTS: dict[str, dict[str, Any]] = {
    'glibc-defaults': {'keep_gb': 0.0},
    'glibc-tunables': {'keep_gb': 0.0, 'env': {'GLIBC_TUNABLES': POLICY_TUNABLES}},
    'jemalloc': {'keep_gb': 0.0, 'preload': 'libjemalloc.so.2', 'package': 'libjemalloc2'},
    'tcmalloc': {'keep_gb': 0.0, 'preload': 'libtcmalloc_minimal.so.4', 'package': 'libtcmalloc-minimal4'},
    'lungjax-policy': {'keep_gb': POLICY_GB},
}
_LIB_DIRS = ('/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib')
# A variant is as fast as the policy when the median of its per-round ratios to it is at least this.
SAME_SPEED = 0.97


def find_library(name: str) -> str | None:
  """The path of a shared library (e.g. libjemalloc.so.2) in the usual folders or ldconfig's cache, else None."""
  for folder in _LIB_DIRS:
    if os.path.exists(path := os.path.join(folder, name)):
      return path
  try:
    listing = subprocess.run(['ldconfig', '-p'], capture_output=True, text=True, check=False).stdout
  except OSError:
    return None
  return next((line.rsplit('=> ', 1)[1].strip() for line in listing.splitlines()
               if line.strip().startswith(name + ' ') and '=> ' in line), None)


def child(keep_gb: float, image_size: int, batch_size: int, warmup_steps: int, steps: int) -> dict[str, Any]:
  """One variant in this process: the study CNN's train step timed after warm-up (see the module docstring)."""
  from configs import cnn  # pylint: disable=g-import-not-at-top
  from lungjax.cpu import host_memory  # pylint: disable=g-import-not-at-top
  config = cnn.get_config()
  config.data.image_size, config.train.batch_size = image_size, batch_size
  config.train.keep_freed_host_memory_gb = keep_gb
  trims = host_memory.apply(config.train)  # As lungjax.main does: before JAX's backend and the first allocation.
  import jax  # pylint: disable=g-import-not-at-top
  from lungjax import steps as steps_lib  # pylint: disable=g-import-not-at-top
  from lungjax.runtime import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from lungjax.models import create_model  # pylint: disable=g-import-not-at-top
  num_classes = len(config.data.classes)
  model = create_model(config.model, num_classes)
  mesh = mesh_lib.make_mesh()
  tx = steps_lib.create_optimizer(config.train)
  options = steps_lib.compiler_options(config.train.get('cpu_compiler_options', ''))
  train_step = steps_lib.jit_train_step(model, tx, np.ones(num_classes, np.float32), mesh, compiler_options=options)
  state = steps_lib.jit_create_train_state(model, tx, image_size, mesh)(jax.random.PRNGKey(config.seed))
  rng = np.random.default_rng(0)
  batch = mesh_lib.to_global_batch(
      {'image': rng.integers(0, 256, (batch_size, image_size, image_size, 3), np.uint8),
       'label': (np.arange(batch_size) % num_classes).astype(np.int32)}, mesh_lib.batch_sharded(mesh))
  for _ in range(warmup_steps + 1):  # The first step compiles.
    state, _ = train_step(state, batch)
  jax.block_until_ready(state)
  trims_before, faults_before = len(trims or []), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  start = time.perf_counter()
  for _ in range(steps):
    state, _ = train_step(state, batch)
  jax.block_until_ready(state)
  seconds = time.perf_counter() - start
  with open('/proc/self/maps') as f:
    maps = f.read()
  return {'train_images_per_s': round(steps * batch_size / seconds, 3),
          'minor_faults_per_step': round((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / steps),
          'trims_in_timed_steps': len(trims or []) - trims_before,
          'peak_rss_gb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 3),
          'lowering': f'{model.conv_impl}+{model.pool_impl}',
          'allocator_loaded': next((name for name in ('jemalloc', 'tcmalloc') if name in maps), 'glibc'),
          'policy_applied': trims is not None}


def run_child(name: str, spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
  """Runs one variant in a fresh process and returns its figures, or {'error': ...}."""
  env = {key: value for key, value in os.environ.items() if key not in ('LD_PRELOAD', 'GLIBC_TUNABLES')}
  env.update(spec.get('env', {}))
  if 'preload' in spec:
    env['LD_PRELOAD'] = spec['preload_path']
  command = [sys.executable, '-m', 'benchmarks.host_memory', '--child', f'--keep_gb={spec["keep_gb"]}',
             f'--image_size={args.image_size}', f'--batch_size={args.batch_size}',
             f'--warmup_steps={args.warmup_steps}', f'--steps={args.steps}']
  try:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.child_timeout_s,
                            check=False, cwd=pathlib.Path(__file__).resolve().parents[1])
  except subprocess.TimeoutExpired:
    return {'error': f'{name}: no result within --child_timeout_s={args.child_timeout_s}'}
  lines = [line for line in result.stdout.splitlines() if line.startswith('{')]
  if result.returncode != 0 or not lines:
    return {'error': f'{name}: exit {result.returncode}: {result.stderr[-1500:]}'}
  return json.loads(lines[-1])


def summarize(per_round: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
  """Per variant: medians over rounds and the medians of per-round ratios to glibc-defaults and lungjax-policy."""
  summary = {}
  for name, runs in per_round.items():
    speeds = np.array([run.get('train_images_per_s', np.nan) for run in runs], float)
    row = {'train_images_per_s': round(float(np.nanmedian(speeds)), 2) if np.isfinite(speeds).any() else None,
           'train_images_per_s_rounds': [None if np.isnan(v) else round(float(v), 2) for v in speeds]}
    for reference in ('glibc-defaults', 'lungjax-policy'):
      if reference in per_round:
        ratios = speeds / np.array([run.get('train_images_per_s', np.nan) for run in per_round[reference]], float)
        row[f'vs_{reference}_median_of_rounds'] = (round(float(np.nanmedian(ratios)), 3)
                                                   if np.isfinite(ratios).any() else None)
    for key in ('peak_rss_gb', 'minor_faults_per_step', 'trims_in_timed_steps'):
      values = [run[key] for run in runs if key in run]
      row[f'{key}_median' if key != 'peak_rss_gb' else 'peak_rss_gb_max'] = (
          (max(values) if key == 'peak_rss_gb' else float(np.median(values))) if values else None)
    row['allocator_loaded'] = sorted({run['allocator_loaded'] for run in runs if 'allocator_loaded' in run})
    row['lowering'] = sorted({run['lowering'] for run in runs if 'lowering' in run})
    errors = [run['error'] for run in runs if 'error' in run]
    if errors:
      row['errors'] = errors
    summary[name] = row
  return summary


def verdict(summary: dict[str, Any]) -> str:
  """The simplest variant (VARIANTS' order) whose speed holds lungjax-policy's within SAME_SPEED."""
  for name in VARIANTS:
    ratio = summary.get(name, {}).get('vs_lungjax-policy_median_of_rounds')
    if ratio is not None and ratio >= SAME_SPEED:
      return (f'simplest that holds the policy\'s speed (median per-round ratio >= {SAME_SPEED}): {name} '
              f'({ratio}x lungjax-policy). Peak RSS here covers a short run per child; the policy\'s cap '
              'matters over full epochs (results/bench/full_run_rss.sh).')
  return 'no variant was measured against lungjax-policy'


def markdown(result: dict[str, Any]) -> str:
  """A short report: the command, the machine, one row per variant, the verdict."""
  lines = ['# Host memory: lungjax\'s policy beside the no-code alternatives', '',
           f'`{result["command"]}` ({result["date"]}; {result["rounds"]} rounds of {result["steps"]} steps after '
           f'{result["warmup_steps"]} warm-up, batch {result["batch_size"]} at {result["image_size"]} px, synthetic '
           f'data, configs/cnn.py\'s model; {result["machine"]["cpu"]}, {result["machine"]["cpu_count"]} cores).', '',
           '| variant | setting | train img/s (median) | vs glibc defaults | vs lungjax policy | peak RSS GB (max) '
           '| minor faults / step |', '|---|---|---|---|---|---|---|']
  for name, row in result['variants'].items():
    setting = result['settings'][name]
    if 'skipped' in row:
      lines.append(f'| {name} | {setting} | skipped: {row["skipped"]} | | | | |')
      continue
    lines.append(f'| {name} | {setting} | {row["train_images_per_s"]} | {row.get("vs_glibc-defaults_median_of_rounds")}'
                 f' | {row.get("vs_lungjax-policy_median_of_rounds")} | {row["peak_rss_gb_max"]} | '
                 f'{row["minor_faults_per_step_median"]} |')
  lines += ['', 'Ratios are medians of per-round ratios (each round runs every variant once, in rotating order).', '',
            result['verdict'], '']
  return '\n'.join(lines)


def main() -> None:
  """Parses the flags; as parent runs the rounds and writes the JSON and the report, as --child one variant."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--steps', type=int, default=20, help='timed train steps per child')
  parser.add_argument('--warmup_steps', type=int, default=3)
  parser.add_argument('--image_size', type=int, default=256)
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--variants', default=','.join(VARIANTS), help='comma-separated, of ' + ', '.join(VARIANTS))
  parser.add_argument('--out_dir', default='results/bench')
  parser.add_argument('--child_timeout_s', type=int, default=900)
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--keep_gb', type=float, default=0.0, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.keep_gb, args.image_size, args.batch_size, args.warmup_steps, args.steps)))
    return
  names = [name.strip() for name in args.variants.split(',') if name.strip()]
  if unknown := sorted(set(names) - set(VARIANTS)):
    parser.error(f'--variants: unknown {unknown}; choose from {list(VARIANTS)}')
  specs, skipped = {}, {}
  for name in names:
    spec = dict(VARIANTS[name])
    if 'preload' in spec:
      spec['preload_path'] = find_library(spec['preload'])
      if spec['preload_path'] is None:
        skipped[name] = f'{spec["preload"]} not installed (apt-get install -y {spec["package"]})'
        continue
    specs[name] = spec
  per_round: dict[str, list[dict[str, Any]]] = {name: [] for name in specs}
  started = time.monotonic()
  for index in range(args.rounds):
    order = list(specs)[index % len(specs):] + list(specs)[:index % len(specs)]
    for name in order:
      run = run_child(name, specs[name], args)
      per_round[name].append(run)
      print(f'round {index + 1}/{args.rounds} {name:15s} {run.get("train_images_per_s", run.get("error"))}',
            flush=True)
  variants = summarize(per_round)
  variants.update({name: {'skipped': reason} for name, reason in skipped.items()})
  settings = {name: (f'keep_freed_host_memory_gb={spec["keep_gb"]}' if spec['keep_gb'] else
                     ' '.join(f'{k}={v}' for k, v in spec.get('env', {}).items())
                     or (f'LD_PRELOAD={spec["preload"]}' if 'preload' in spec else 'keep_freed_host_memory_gb=0'))
              for name, spec in VARIANTS.items() if name in names}
  import jax  # pylint: disable=g-import-not-at-top  (only for the versions: the children did the work)
  with open('/proc/cpuinfo') as f:
    cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), platform.processor())
  result = {'command': ' '.join(['python -m benchmarks.host_memory', *sys.argv[1:]]),
            'date': time.strftime('%Y-%m-%d %H:%M'), 'wall_s': round(time.monotonic() - started),
            'rounds': args.rounds, 'steps': args.steps, 'warmup_steps': args.warmup_steps,
            'batch_size': args.batch_size, 'image_size': args.image_size,
            'machine': {'cpu': cpu, 'cpu_count': os.cpu_count(), 'glibc': platform.libc_ver()[1],
                        'load_average_1_5_15_end': [round(x, 2) for x in os.getloadavg()], 'jax': jax.__version__},
            'settings': settings, 'variants': variants}
  result['verdict'] = verdict(variants)
  os.makedirs(args.out_dir, exist_ok=True)
  json_path, md_path = os.path.join(args.out_dir, 'host_memory.json'), os.path.join(args.out_dir, 'host_memory.md')
  with open(json_path, 'w') as f:
    json.dump(result, f, indent=2)
  with open(md_path, 'w') as f:
    f.write(markdown(result))
  print(markdown(result))
  print(f'wrote {json_path} and {md_path} in {result["wall_s"]} s')


if __name__ == '__main__':
  main()
