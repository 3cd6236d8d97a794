"""python -m lungjax.faults: the fault matrix (kill -9, SIGTERM, full disk, corrupt checkpoints, other runs'
checkpoints, NaN, bad images, determinism, busy or foreign workdirs), each trial in a subprocess or tmp folder of
the tiny config on synthetic images. Writes results/reliability/summary.json and README.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags, logging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP_MARK = '.orbax-checkpoint-tmp'

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defines the command's flags, only when run as a command (every module shares absl's flag registry)."""
  flags.DEFINE_integer('kill_trials', 20, 'kill -9 at a random moment of a run, then rerun to the end.')
  flags.DEFINE_integer('save_kill_trials', 10, 'kill -9 while a checkpoint tmp folder exists (inside a save).')
  flags.DEFINE_integer('chain_trials', 3, 'runs killed three times before finishing.')
  flags.DEFINE_integer('sigterm_trials', 3, 'SIGTERM mid-training: must save, exit 0 and resume.')
  flags.DEFINE_integer('disk_trials', 2, 'checkpoint folder on a full tmpfs: the run must fail clearly.')
  flags.DEFINE_integer('corrupt_trials', 10, 'byte flips, and as many truncations / deletions, in a saved step.')
  flags.DEFINE_integer('determinism_runs', 10, 'fresh runs that must end with identical parameters.')
  flags.DEFINE_list('rows', [], 'Only these rows (names: see ROWS); default all.')
  flags.DEFINE_integer('seed', 0, 'Seeds the trial timings and corruptions.')
  flags.DEFINE_string('out', os.path.join(REPO, 'results', 'reliability'), 'Where summary.json and README.md go.')
  flags.DEFINE_string('work', '', 'Scratch folder (default: a new tmp folder, removed at the end).')


# The runs of the matrix: the tiny config on 36 synthetic images, 3 epochs of 6 steps, every step kept.
RUN_OVERRIDES = ('--config.train.num_epochs=3', '--config.checkpoint.keep_latest=3', '--config.eval.n_bootstrap=50')


@dataclasses.dataclass
class Row:
  """One fault kind: how many trials ran, how many passed, and what happened."""

  fault: str
  trials: int = 0
  passed: int = 0
  outcome: str = ''
  failures: list[str] = dataclasses.field(default_factory=list)

  def add(self, ok: bool, failure: str = '') -> None:
    """Counts one trial."""
    self.trials += 1
    self.passed += bool(ok)
    if not ok:
      self.failures.append(failure)


# ---- synthetic data and runs ------------------------------------------------------------------------------------


def write_synthetic_root(root: str, per_class: int = 12, seed: int = 0) -> str:
  """root/train/<class>/<i>.png: smooth striped images whose band position is the class (as tests/conftest.py)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  for label, name in enumerate(('Covid', 'Normal', 'Viral Pneumonia')):
    folder = os.path.join(root, 'train', name)
    os.makedirs(folder, exist_ok=True)
    for i in range(per_class):
      low = (rng.random((4, 5)) * 150).astype(np.float32)
      background = np.asarray(Image.fromarray(low).resize((48, 40), Image.Resampling.BILINEAR))
      pixels = background[..., None] + rng.random((40, 48, 3)) * 30
      pixels[:, label * 16:(label + 1) * 16] += 70
      Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(os.path.join(folder, f'{i:03d}.png'))
  return root


def run_command(root: str, workdir: str, *extra: str) -> list[str]:
  """The lungjax.main command line of one training run of the matrix."""
  return [sys.executable, '-m', 'lungjax.main', f'--config={os.path.join(REPO, "configs", "tiny.py")}',
          f'--config.data.root={root}', f'--workdir={workdir}', *RUN_OVERRIDES, *extra]


def start(command: Sequence[str], log_path: str, prefix: Sequence[str] = ()) -> subprocess.Popen:
  """Starts a run in its own process group, its output in log_path."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=REPO)
  log = open(log_path, 'ab')  # pylint: disable=consider-using-with
  return subprocess.Popen([*prefix, *command], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True)


def finish(command: Sequence[str], log_path: str, prefix: Sequence[str] = (), timeout: float = 600) -> int:
  """Runs a command to its end; returns its exit status."""
  process = start(command, log_path, prefix)
  try:
    return process.wait(timeout)
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return -9


def kill9(process: subprocess.Popen) -> bool:
  """kill -9 the run's process group; True if it was still running."""
  alive = process.poll() is None
  if alive:
    os.killpg(process.pid, signal.SIGKILL)
  process.wait()
  return alive


def tail(log_path: str, n: int = 4000) -> str:
  """The end of a log file."""
  with open(log_path, 'rb') as f:
    f.seek(max(0, os.path.getsize(log_path) - n))
    return f.read().decode(errors='replace')


def committed_steps(workdir: str) -> list[int]:
  """The committed step folders of a workdir."""
  folder = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def tmp_folders(workdir: str) -> list[str]:
  """Uncommitted orbax tmp folders left in a workdir's checkpoints."""
  folder = os.path.join(workdir, 'checkpoints')
  return [n for n in os.listdir(folder) if TMP_MARK in n] if os.path.isdir(folder) else []


class Checker:
  """Restores workdirs' checkpoints in this process (verified) to compare parameter hashes."""

  def __init__(self, root: str):
    from configs import tiny  # pylint: disable=g-import-not-at-top
    from lungjax import mesh as mesh_lib, steps  # pylint: disable=g-import-not-at-top
    from lungjax.models import create_model  # pylint: disable=g-import-not-at-top
    self.config = tiny.get_config()
    self.config.data.root = root
    self.config.train.num_epochs = 3
    self.config.checkpoint.keep_latest = 3
    model = create_model(self.config.model, 3)
    self.abstract = steps.abstract_train_state(model, steps.create_optimizer(self.config.train),
                                               self.config.data.image_size, mesh_lib.make_mesh())

  def manager(self, workdir: str, read_only: bool = True):
    from lungjax import checkpoints  # pylint: disable=g-import-not-at-top
    return checkpoints.create_manager(workdir, self.config.checkpoint, read_only=read_only)

  def digest(self, workdir: str, step: int | None = None) -> str | None:
    """sha256 of the parameters of `step` (default: the latest), verified; None when there is none."""
    from lungjax import checkpoints  # pylint: disable=g-import-not-at-top
    manager = self.manager(workdir)
    try:
      step = manager.latest_step() if step is None else step
      if step is None:
        return None
      return checkpoints.params_sha256(checkpoints.restore_verified(manager, step, self.abstract).state.params)
    finally:
      manager.close()


# ---- the rows ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Context:
  """What every row shares: the data, the uninterrupted reference run and its hashes."""

  work: str
  root: str
  checker: Checker
  reference: str  # Workdir of an uninterrupted run.
  reference_digest: str
  step_digests: dict[int, str]
  run_seconds: float
  rng: random.Random
  counter: int = 0

  def fresh(self, name: str) -> tuple[str, str]:
    """A new workdir and log path."""
    self.counter += 1
    workdir = os.path.join(self.work, f'{self.counter:03d}-{name}')
    return workdir, workdir + '.log'


def _resume_matches(ctx: Context, workdir: str, log: str) -> tuple[bool, str]:
  """Reruns the command to its end; True when it exits 0 with the reference's parameters and no tmp folder left."""
  rc = finish(run_command(ctx.root, workdir), log)
  if rc != 0:
    return False, f'{workdir}: resume exited {rc}: {tail(log, 600)}'
  digest = ctx.checker.digest(workdir)
  if digest != ctx.reference_digest:
    return False, f'{workdir}: parameters differ from the uninterrupted run'
  if tmp_folders(workdir):
    return False, f'{workdir}: tmp folders left: {tmp_folders(workdir)}'
  return True, ''


def row_kill_random(ctx: Context, trials: int) -> Row:
  row = Row('kill -9 at a random moment, rerun')
  before_first = 0
  for _ in range(trials):
    workdir, log = ctx.fresh('kill')
    process = start(run_command(ctx.root, workdir), log)
    time.sleep(ctx.rng.uniform(0.5, ctx.run_seconds))
    kill9(process)
    before_first += not committed_steps(workdir)
    row.add(*_resume_matches(ctx, workdir, log))
  row.outcome = (f'{row.passed}/{row.trials} identical params sha256 after resume ({before_first} killed before '
                 'the first checkpoint)')
  return row


def _kill_inside_save(ctx: Context, workdir: str, log: str, nth_save: int) -> bool:
  """Starts a run and kills it -9 as soon as its nth checkpoint tmp folder appears; True if that happened."""
  process = start(run_command(ctx.root, workdir), log)
  seen: set[str] = set()
  folder = os.path.join(workdir, 'checkpoints')
  while process.poll() is None:
    try:
      names = [n for n in os.listdir(folder) if TMP_MARK in n]
    except FileNotFoundError:
      names = []
    seen.update(names)
    if len(seen) >= nth_save and names:
      kill9(process)
      return True
    time.sleep(0.0005)
  return False


def row_kill_in_save(ctx: Context, trials: int) -> Row:
  row = Row('kill -9 inside a checkpoint save, rerun')
  left = 0
  for trial in range(trials):
    workdir, log = ctx.fresh('savekill')
    hit = _kill_inside_save(ctx, workdir, log, nth_save=1 + trial % 3)
    left += bool(tmp_folders(workdir))
    if not hit:
      row.add(False, f'{workdir}: the run ended before its save could be caught')
      continue
    row.add(*_resume_matches(ctx, workdir, log))
  row.outcome = (f'{row.passed}/{row.trials} identical after resume; {left} kills left an uncommitted tmp folder, '
                 'all cleaned on the rerun')
  return row


def row_chained(ctx: Context, trials: int) -> Row:
  row = Row('kill -9 three times in one run')
  for _ in range(trials):
    workdir, log = ctx.fresh('chain')
    for _ in range(3):
      process = start(run_command(ctx.root, workdir), log)
      time.sleep(ctx.rng.uniform(0.5, ctx.run_seconds))
      kill9(process)
    row.add(*_resume_matches(ctx, workdir, log))
  row.outcome = f'{row.passed}/{row.trials} identical after the fourth start'
  return row


def row_sigterm(ctx: Context, trials: int) -> Row:
  row = Row('SIGTERM (preemption)')
  stopped_at = []
  for _ in range(trials):
    workdir, log = ctx.fresh('sigterm')
    process = start(run_command(ctx.root, workdir), log)
    while process.poll() is None and not committed_steps(workdir):  # The handler is installed by then.
      time.sleep(0.005)
    time.sleep(ctx.rng.uniform(0.0, 0.05))
    if process.poll() is None:
      process.send_signal(signal.SIGTERM)
    rc = process.wait(300)
    found = re.search(r'preempted \(SIGTERM\): saved checkpoint step (\d+)', tail(log))
    stopped = found is not None
    stopped_at += [int(found.group(1))] if found else []
    if rc != 0:
      row.add(False, f'{workdir}: exit {rc} after SIGTERM: {tail(log, 600)}')
      continue
    ok, why = _resume_matches(ctx, workdir, log)
    row.add(ok and stopped, why or f'{workdir}: finished without a preemption save')
  row.outcome = (f'{row.passed}/{row.trials} saved at the next step (steps {stopped_at} of 18), exited 0, resumed '
                 'identical')
  return row


def row_disk_full(ctx: Context, trials: int) -> Row:
  row = Row('disk full during a save')
  for _ in range(trials):
    workdir, log = ctx.fresh('diskfull')
    if finish(run_command(ctx.root, workdir, '--config.train.num_epochs=1'), log) != 0:  # Same run, 1 epoch.
      row.add(False, f'{workdir}: the first epoch failed')
      continue
    folder = os.path.join(workdir, 'checkpoints')
    saved = folder + '.saved'
    shutil.move(folder, saved)
    os.makedirs(folder)
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', folder], capture_output=True).returncode:
      row.outcome = 'not run: `mount -t tmpfs` is not permitted here (needs root)'
      shutil.rmtree(folder)
      return row
    try:
      for name in os.listdir(saved):
        shutil.copytree(os.path.join(saved, name), os.path.join(folder, name))
      filler = os.path.join(folder, 'filler')
      with open(filler, 'wb', buffering=0) as f:  # Fill the disk to the last byte.
        for chunk in (1 << 16, 1 << 10, 1):
          try:
            while True:
              f.write(b'\0' * chunk)
          except OSError:
            pass
      rc = finish(run_command(ctx.root, workdir), log)
      message = tail(log, 3000)
      clear = 'CheckpointSaveError' in message and ('No space' in message or 'ENOSPC' in message or
                                                   'full disk' in message)
      intact = ctx.checker.digest(workdir, 6) == ctx.step_digests[6]
      os.remove(filler)
      ok, why = _resume_matches(ctx, workdir, log)
      row.add(rc != 0 and clear and intact and ok,
              why or f'{workdir}: exit {rc}, clear message {clear}, step 6 intact {intact}')
    finally:
      subprocess.run(['umount', '-l', folder], check=False)
  row.outcome = (f'{row.passed}/{row.trials} failed non-zero with CheckpointSaveError, older step intact; after '
                 'freeing space the rerun resumed identical')
  return row


def _corrupt(path: str, kind: str, rng: random.Random) -> str:
  """Flips one byte of, truncates, or deletes a file; returns what was done."""
  size = os.path.getsize(path)
  if kind == 'flip' and size:
    offset = rng.randrange(size)
    with open(path, 'r+b') as f:
      f.seek(offset)
      byte = f.read(1)[0]
      f.seek(offset)
      f.write(bytes([byte ^ rng.randrange(1, 256)]))
    return f'flipped byte {offset} of {size}'
  if kind == 'truncate' and size:
    length = rng.randrange(size)
    os.truncate(path, length)
    return f'truncated {size} → {length} bytes'
  os.remove(path)
  return 'deleted'


def row_corruption(ctx: Context, trials: int, kind: str) -> Row:
  """Corrupts a random file of the latest step; eval must error or read the same; resume must pick a good step."""
  from lungjax import checkpoints  # pylint: disable=g-import-not-at-top
  names = {'flip': 'byte flip in a checkpoint file', 'truncate': 'truncated or deleted checkpoint file'}
  row = Row(names[kind])
  detected = harmless = 0
  last = max(ctx.step_digests)
  for trial in range(trials):
    workdir, log = ctx.fresh(kind)
    shutil.copytree(ctx.reference, workdir)
    step_dir = os.path.join(workdir, 'checkpoints', str(last))
    files = sorted(os.path.join(p, n) for p, _, ns in os.walk(step_dir) for n in ns)
    target = ctx.rng.choice(files)
    how = _corrupt(target, kind if kind == 'flip' or trial % 2 == 0 else 'delete', ctx.rng)
    what = f'{os.path.relpath(target, step_dir)}: {how}'
    try:  # eval / explain / predict: an error naming the step, or exactly the saved weights.
      manager = None
      manager = ctx.checker.manager(workdir)
      restored = checkpoints.restore_chosen(manager, ctx.checker.abstract, workdir, requested=last)
      eval_ok = checkpoints.params_sha256(restored.state.params) == ctx.step_digests[last]
      harmless += eval_ok
    except checkpoints.CorruptCheckpointError as error:
      eval_ok = f'step {last}' in str(error)
      detected += eval_ok
    except Exception as error:  # pylint: disable=broad-except
      eval_ok, what = False, f'{what}: eval raised {type(error).__name__}: {error}'
    finally:
      if manager is not None:
        manager.close()
    if trial == 0:  # End to end once: the training command resumes from a good step and finishes identical.
      ok, why = _resume_matches(ctx, workdir, log)
    else:
      manager = ctx.checker.manager(workdir, read_only=False)
      try:
        good = checkpoints.restore_latest_good(manager, ctx.checker.abstract, None)
        ok = good is not None and checkpoints.params_sha256(good.state.params) == ctx.step_digests[good.step]
        why = '' if ok else f'{workdir}: resume picked a bad step'
      finally:
        manager.close()
    row.add(eval_ok and ok, f'{what}: {why}' if why or not eval_ok else '')
  row.outcome = (f'{row.passed}/{row.trials}: {detected} reported naming the step (resume used the step before), '
                 f'{harmless} harmless (identical weights read); 0 wrong weights used')
  return row


def row_dtype(ctx: Context) -> Row:
  """A float32 checkpoint restored into a bfloat16 target (orbax casts silently): must refuse."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from lungjax import checkpoints  # pylint: disable=g-import-not-at-top
  row = Row('restore into another dtype (float32 → bfloat16)')
  abstract = ctx.checker.abstract
  bf16 = abstract.replace(params=jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16, sharding=x.sharding), abstract.params))
  manager = ctx.checker.manager(ctx.reference)
  try:
    checkpoints.restore_verified(manager, max(ctx.step_digests), bf16)
    row.add(False, 'restored silently')
  except checkpoints.CheckpointMismatchError as error:
    row.add('bfloat16' in str(error) and 'float32' in str(error), str(error))
  finally:
    manager.close()
  row.outcome = f'{row.passed}/{row.trials} refused with CheckpointMismatchError naming both dtypes'
  return row


def row_fingerprint(ctx: Context) -> Row:
  """Resuming a 1-epoch checkpoint with something changed: refuse with the field named, or start fresh."""
  row = Row('resume with a changed fingerprint')
  base, log = ctx.fresh('fp-base')
  finish(run_command(ctx.root, base, '--config.train.num_epochs=1'), log)
  more_files = os.path.join(ctx.work, 'data-plus-one')
  if not os.path.isdir(more_files):
    shutil.copytree(ctx.root, more_files)
    shutil.copy(os.path.join(more_files, 'train', 'Covid', '000.png'), os.path.join(more_files, 'train', 'Covid',
                                                                                      'extra.png'))
  changes = [('seed', ['--config.seed=1']), ('batch_size', ['--config.train.batch_size=2']),
             ('model.conv_features', ['--config.model.conv_features=(4,8,16)']),
             ('classes', ["--config.data.classes=('Normal','Covid','Viral Pneumonia')"]),
             ('train_files', [f'--config.data.root={more_files}']),
             ('split.val_fraction', ['--config.data.val_fraction=0.3']),
             ('optimizer.learning_rate', ['--config.train.learning_rate=0.01'])]
  for field, flags_ in changes:
    workdir, log = ctx.fresh('fp')
    shutil.copytree(base, workdir)
    rc = finish(run_command(ctx.root, workdir, *flags_), log)
    message = tail(log, 4000)
    row.add(rc != 0 and 'different run' in message and field in message,
            f'{field}: exit {rc}, {message[-400:]}')
  workdir, log = ctx.fresh('fp-fresh')
  shutil.copytree(base, workdir)
  rc = finish(run_command(ctx.root, workdir, '--config.seed=1', '--config.checkpoint.on_mismatch=fresh'), log)
  aside = [n for n in os.listdir(workdir) if n.startswith('checkpoints.replaced-')]
  row.add(rc == 0 and bool(aside) and committed_steps(workdir) == [6, 12, 18], f'fresh: exit {rc}, aside {aside}')
  cpus = sorted(os.sched_getaffinity(0))
  cpu_note = ''
  if len(cpus) > 1:
    workdir, log = ctx.fresh('fp-cpus')
    shutil.copytree(base, workdir)
    rc = finish(run_command(ctx.root, workdir), log, prefix=('taskset', '-c', str(cpus[0])))
    row.add(rc == 0 and 'bits will differ' in tail(log, 20000), f'cpu count: exit {rc}')
    cpu_note = '; a changed CPU count resumed with the warning that bits will differ'
  row.outcome = (f'{row.passed}/{row.trials}: {len(changes)} changed fields each refused with a diff naming the '
                 f'field; on_mismatch=fresh set the old checkpoints aside and started over{cpu_note}')
  return row


def row_nan(ctx: Context) -> Row:
  row = Row('NaN / inf in training')
  for learning_rate in ('1e30', '1e38'):
    workdir, log = ctx.fresh('nan')
    rc = finish(run_command(ctx.root, workdir, f'--config.train.learning_rate={learning_rate}'), log)
    message = tail(log, 4000)
    named = 'FloatingPointError' in message and ' at step ' in message
    finite = True
    for step in committed_steps(workdir):  # Whatever was saved verifies and is finite.
      ok = ctx.checker.digest(workdir, step) is not None
      finite &= ok
    row.add(rc != 0 and named and finite, f'lr {learning_rate}: exit {rc}, named {named}, finite saves {finite}')
  row.outcome = f'{row.passed}/{row.trials} exited non-zero naming the step; no non-finite checkpoint written'
  return row


def _png_chunk(kind: bytes, data: bytes) -> bytes:
  return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
  """A small PNG whose header claims width x height pixels (a decompression bomb's header)."""
  header = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
  rows = zlib.compress(b'\0' * (width + 1) * 4)
  return b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', header) + _png_chunk(b'IDAT', rows) + _png_chunk(b'IEND', b'')


def bad_image_files(folder: str) -> dict[str, str]:
  """Writes one file of every bad kind into folder; returns {kind: path}."""
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(folder, exist_ok=True)
  good_png, good_jpg, tiff, gif = io.BytesIO(), io.BytesIO(), io.BytesIO(), io.BytesIO()
  image = Image.new('RGB', (64, 64), (120, 30, 200))
  image.save(good_png, 'PNG')
  image.save(good_jpg, 'JPEG')
  image.save(tiff, 'TIFF')
  image.save(gif, 'GIF')
  contents = {
      'empty': ('empty.png', b''),
      'text': ('notes.jpg', b'<html>not an image</html>\n' * 20),
      'truncated PNG': ('cut.png', good_png.getvalue()[:len(good_png.getvalue()) // 2]),
      'truncated JPEG': ('cut.jpg', good_jpg.getvalue()[:len(good_jpg.getvalue()) // 2]),
      'TIFF named .png': ('tiff.png', tiff.getvalue()),
      'GIF named .png': ('gif.png', gif.getvalue()),
      'random bytes': ('noise.jpeg', random.Random(0).randbytes(5000)),
      'decompression bomb 20000x20000': ('bomb.png', bomb_png()),
  }
  paths = {}
  for kind, (name, data) in contents.items():
    paths[kind] = os.path.join(folder, name)
    with open(paths[kind], 'wb') as f:
      f.write(data)
  return paths


def row_bad_images(ctx: Context) -> Row:
  """Every bad kind: an error naming the file within a second, or (skip_bad_images) skipped and counted."""
  from lungjax.data import folders, images  # pylint: disable=g-import-not-at-top
  row = Row('bad image files')
  paths = bad_image_files(os.path.join(ctx.work, 'bad-images'))
  slowest = 0.0
  for kind, path in paths.items():
    record = folders.Record(path=path, label=0)
    began = time.perf_counter()
    try:
      images.decode_records([record], 32)
      named = False
    except images.BadImageError as error:
      named = path in str(error)
    seconds = time.perf_counter() - began
    slowest = max(slowest, seconds)
    skipped = images.decode_records([record], 32, skip_bad_images=True)
    counted = len(skipped) == 0 and [p for p, _ in skipped.skipped] == [path]
    row.add(named and seconds < 1.0 and counted, f'{kind}: named {named}, {seconds:.2f} s, counted {counted}')
  row.outcome = (f'{row.passed}/{row.trials} kinds ({", ".join(paths)}): error naming the file (slowest '
                 f'{slowest:.3f} s), or skipped and counted with data.skip_bad_images')
  return row


def row_iterator(ctx: Context, trials: int) -> Row:
  """A grain iterator restored mid-epoch yields exactly the remaining batches, with 0 and 2 read threads."""
  import grain  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lungjax.data import pipeline  # pylint: disable=g-import-not-at-top
  row = Row('iterator restored mid-epoch')
  images_NHWC = np.arange(27, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
  dataset = pipeline.train_dataset(images_NHWC, np.arange(27, dtype=np.int32), global_batch_size=4, num_epochs=3,
                                   seed=0)
  expected = [dataset[i]['label'] for i in range(len(dataset))]
  for threads in (0, 2):
    for _ in range(trials):
      at = ctx.rng.randrange(1, len(dataset))
      options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4 if threads else 0)
      first = iter(dataset.to_iter_dataset(options))
      for _ in range(at):
        next(first)
      state = first.get_state()
      second = iter(dataset.to_iter_dataset(options))
      second.set_state(state)
      rest = [batch['label'] for batch in second]
      row.add(len(rest) == len(expected) - at and all((a == b).all() for a, b in zip(rest, expected[at:])),
              f'{threads} threads, restored at {at}')
  row.outcome = f'{row.passed}/{row.trials} restores (0 and 2 read threads) yielded exactly the remaining batches'
  return row


def row_determinism(ctx: Context, runs: int) -> Row:
  row = Row('fresh runs of the same command')
  digests = {ctx.reference_digest}
  for _ in range(runs - 1):  # The reference run is the first.
    workdir, log = ctx.fresh('determinism')
    rc = finish(run_command(ctx.root, workdir), log)
    digest = ctx.checker.digest(workdir) if rc == 0 else None
    digests.add(digest)
    row.add(digest == ctx.reference_digest, f'{workdir}: exit {rc}')
  row.add(True)  # The reference run itself.
  row.outcome = f'{row.passed}/{row.trials} runs ended with one params sha256 ({len(digests)} distinct)'
  return row


def row_workdir(ctx: Context) -> Row:
  """A second run on a running run's workdir, and a folder lungjax did not make as --workdir: both refused."""
  row = Row('second run on a busy workdir; a foreign folder as workdir')
  workdir, log = ctx.fresh('busy')
  first = start(run_command(ctx.root, workdir), log)
  lock = os.path.join(workdir, '.lock')
  while not os.path.exists(lock) and first.poll() is None:
    time.sleep(0.05)
  rc = finish(run_command(ctx.root, workdir), workdir + '-second.log')
  message = tail(workdir + '-second.log', 3000)
  first_rc = first.wait(600)
  same = first_rc == 0 and ctx.checker.digest(workdir) == ctx.reference_digest
  row.add(rc != 0 and 'WorkdirBusyError' in message and f'process {first.pid}' in message and same,
          f'{workdir}: second exit {rc} ({message[-300:]}), first exit {first_rc}, identical {same}')
  foreign, log = ctx.fresh('foreign')
  os.makedirs(os.path.join(foreign, 'checkpoints', '100'))
  for name, text in (('config.json', '{"mine": 1}'), ('summary.json', '{}'), ('checkpoints/100/w.bin', 'x')):
    with open(os.path.join(foreign, name), 'w') as f:
      f.write(text)
  before = sorted((p, open(os.path.join(p, n), 'rb').read()) for p, _, ns in os.walk(foreign) for n in ns)
  rc = finish(run_command(ctx.root, foreign), log)
  after = sorted((p, open(os.path.join(p, n), 'rb').read()) for p, _, ns in os.walk(foreign) for n in ns)
  row.add(rc != 0 and 'ForeignFolderError' in tail(log) and before == after,
          f'{foreign}: exit {rc}, untouched {before == after}')
  row.outcome = (f'{row.passed}/{row.trials}: the second run exited non-zero naming the first\'s process, which '
                 'ended identical; the foreign folder was refused and left byte-identical')
  return row


# ---- the matrix --------------------------------------------------------------------------------------------------


ROWS = ('kill', 'save_kill', 'chain', 'sigterm', 'disk', 'flip', 'truncate', 'dtype', 'fingerprint', 'nan',
        'images', 'iterator', 'determinism', 'workdir')


def run_matrix(work: str, *, kill_trials: int, save_kill_trials: int, chain_trials: int, sigterm_trials: int,
               disk_trials: int, corrupt_trials: int, determinism_runs: int, seed: int = 0,
               rows: Sequence[str] = ROWS, log: Callable[[str], None] = print) -> list[Row]:
  """Runs the chosen rows (all by default) in `work` and returns them; a row that crashes is a failed row."""
  unknown = set(rows) - set(ROWS)
  if unknown:
    raise ValueError(f'--rows: unknown {sorted(unknown)}; choose from {list(ROWS)}')
  root = write_synthetic_root(os.path.join(work, 'data'))
  checker = Checker(root)
  reference = os.path.join(work, 'reference')
  began = time.perf_counter()
  if finish(run_command(root, reference), reference + '.log') != 0:
    raise RuntimeError(f'the reference run failed: {tail(reference + ".log")}')
  run_seconds = time.perf_counter() - began
  step_digests = {step: checker.digest(reference, step) for step in committed_steps(reference)}
  ctx = Context(work, root, checker, reference, step_digests[max(step_digests)], step_digests, run_seconds,
                random.Random(seed))
  log(f'reference run: {run_seconds:.1f} s, steps {sorted(step_digests)}, params sha256 {ctx.reference_digest}')
  plan = {
      'kill': (row_kill_random, kill_trials), 'save_kill': (row_kill_in_save, save_kill_trials),
      'chain': (row_chained, chain_trials), 'sigterm': (row_sigterm, sigterm_trials),
      'disk': (row_disk_full, disk_trials), 'flip': (lambda c, n: row_corruption(c, n, 'flip'), corrupt_trials),
      'truncate': (lambda c, n: row_corruption(c, n, 'truncate'), corrupt_trials),
      'dtype': (lambda c, n: row_dtype(c), 1), 'fingerprint': (lambda c, n: row_fingerprint(c), 1),
      'nan': (lambda c, n: row_nan(c), 1), 'images': (lambda c, n: row_bad_images(c), 1),
      'iterator': (row_iterator, max(1, corrupt_trials // 2)), 'determinism': (row_determinism, determinism_runs),
      'workdir': (lambda c, n: row_workdir(c), 1)}
  done = []
  for name in ROWS:
    fn, n = plan[name]
    if name not in rows or n <= 0:
      continue
    began = time.perf_counter()
    try:
      row = fn(ctx, n)
    except Exception as error:  # pylint: disable=broad-except
      row = Row(name, trials=max(n, 1), outcome=f'crashed: {type(error).__name__}: {error}',
                failures=[repr(error)])
    done.append(row)
    log(f'{row.fault}: {row.outcome} ({time.perf_counter() - began:.0f} s)')
    for failure in row.failures:
      log(f'  FAILED: {failure[:1000]}')
  return done


def write_results(rows: Sequence[Row], out: str, command: str, seconds: float) -> None:
  """summary.json and README.md (the table and the command)."""
  os.makedirs(out, exist_ok=True)
  summary = {'command': command, 'seconds': round(seconds, 1), 'cpu_count': len(os.sched_getaffinity(0)),
             'rows': [{'fault': r.fault, 'trials': r.trials, 'passed': r.passed, 'outcome': r.outcome,
                       'failures': r.failures} for r in rows]}
  with open(os.path.join(out, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  lines = ['# Reliability: the fault matrix', '',
           'Every row is a fault injected into real runs of `configs/tiny.py` (3 epochs of 6 steps) on 36 synthetic '
           'images, each in a subprocess and a tmp folder; "identical" means the sha256 of the final parameters '
           'equals an uninterrupted run\'s. Regenerate with:', '', '```bash', command, '```', '',
           f'({seconds / 60:.1f} minutes on {summary["cpu_count"]} CPU cores.)', '',
           '| fault | trials | passed | outcome |', '|---|---|---|---|']
  lines += [f'| {r.fault} | {r.trials} | {r.passed} | {r.outcome} |' for r in rows]
  with open(os.path.join(out, 'README.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


def main(argv: Sequence[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax's INFO lines of the in-process restores.
  work = FLAGS.work or tempfile.mkdtemp(prefix='lungjax-faults-')
  os.makedirs(work, exist_ok=True)
  began = time.perf_counter()
  try:
    rows = run_matrix(work, kill_trials=FLAGS.kill_trials, save_kill_trials=FLAGS.save_kill_trials,
                      chain_trials=FLAGS.chain_trials, sigterm_trials=FLAGS.sigterm_trials,
                      disk_trials=FLAGS.disk_trials, corrupt_trials=FLAGS.corrupt_trials,
                      determinism_runs=FLAGS.determinism_runs, seed=FLAGS.seed, rows=FLAGS.rows or ROWS)
  finally:
    if not FLAGS.work:
      shutil.rmtree(work, ignore_errors=True)
  flag_names = ('kill_trials', 'save_kill_trials', 'chain_trials', 'sigterm_trials', 'disk_trials',
                'corrupt_trials', 'determinism_runs', 'seed')
  command = 'python -m lungjax.faults ' + ' '.join(f'--{n}={FLAGS[n].value}' for n in flag_names)
  if FLAGS.rows:
    command += f' --rows={",".join(FLAGS.rows)}'
  write_results(rows, FLAGS.out, command, time.perf_counter() - began)
  print(f'wrote {os.path.join(FLAGS.out, "summary.json")} and README.md')
  if any(r.passed < r.trials for r in rows):
    sys.exit(1)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
