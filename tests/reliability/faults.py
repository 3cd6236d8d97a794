"""The fault matrix: kill -9, SIGTERM, Ctrl-C, full disk, corrupt checkpoints, other runs' checkpoints, NaN, bad
images, determinism, busy or foreign workdirs, outputs beside inputs, restores with other classes, reading while
training, a huge PNG, dangling links and unreadable files, each trial in a subprocess or tmp folder of the tiny
config on synthetic images. Run from the repository root:

  python -m tests.reliability.faults [--rows=kill,disk] [--kill_trials=N ...]

Writes results/reliability/summary.json and README.md; a trial that cannot run here (e.g. it needs root) is counted
as skipped, never as passed.
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

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # The checkout under test.
TMP_MARK = '.orbax-checkpoint-tmp'

FLAGS = flags.FLAGS


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
  skipped: int = 0  # Trials that could not run here (e.g. they need root): neither in trials nor passed.

  def add(self, ok: bool, failure: str = '') -> None:
    """Counts one trial."""
    self.trials += 1
    self.passed += bool(ok)
    if not ok:
      self.failures.append(failure)

  def skip(self, n: int = 1) -> None:
    """Counts n trials that could not run here: they are reported as skipped, never as passed."""
    self.skipped += n


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


def _env() -> dict[str, str]:
  """The environment of the matrix's subprocesses: this checkout's lungjax, TensorFlow quiet."""
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=REPO)


def start(command: Sequence[str], log_path: str, prefix: Sequence[str] = ()) -> subprocess.Popen:
  """Starts a run in its own process group, its output in log_path."""
  log = open(log_path, 'ab')  # pylint: disable=consider-using-with
  return subprocess.Popen([*prefix, *command], cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT,
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


def params_sha256(params: Any) -> str:
  """One sha256 over every parameter leaf (path, dtype, shape and bytes): what 'the same weights' means."""
  import hashlib  # pylint: disable=g-import-not-at-top
  from lungjax import checkpoints  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256()
  for path, entry in sorted(checkpoints.leaf_checksums(params).items()):
    digest.update(json.dumps([path, entry], sort_keys=True).encode())
  return digest.hexdigest()


class Checker:
  """Restores workdirs' checkpoints in this process (verified) to compare parameter hashes."""

  def __init__(self, root: str):
    from configs import tiny  # pylint: disable=g-import-not-at-top
    from lungjax import steps  # pylint: disable=g-import-not-at-top
    from lungjax.runtime import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
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
      return params_sha256(checkpoints.restore_verified(manager, step, self.abstract).state.params)
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


def _stop_mid_training(ctx: Context, trials: int, row: Row, signum: int, name: str) -> list[int]:
  """Sends `signum` to runs once their first checkpoint is committed (SIGINT to the whole process group, as a
  terminal's Ctrl-C does); each must save, exit 0 (SIGTERM) or 130 (SIGINT, and without a traceback), and resume
  identical. Returns the steps they saved at."""
  expected_rc = 130 if signum == signal.SIGINT else 0
  said = 'stopped (SIGINT, Ctrl-C)' if signum == signal.SIGINT else 'preempted (SIGTERM)'
  stopped_at = []
  for _ in range(trials):
    workdir, log = ctx.fresh(name)
    process = start(run_command(ctx.root, workdir), log)
    while process.poll() is None and not committed_steps(workdir):  # The handler is installed by then.
      time.sleep(0.005)
    time.sleep(ctx.rng.uniform(0.0, 0.05))
    if process.poll() is None and signum == signal.SIGINT:
      os.killpg(process.pid, signum)
    elif process.poll() is None:
      process.send_signal(signum)
    rc = process.wait(300)
    message = tail(log, 20000)
    traceback = signum == signal.SIGINT and 'Traceback' in message
    found = re.search(re.escape(said) + r': saved checkpoint step (\d+)', message)
    stopped_at += [int(found.group(1))] if found else []
    if rc != expected_rc or traceback:
      row.add(False, f'{workdir}: exit {rc} after {signal.Signals(signum).name} (expected {expected_rc}), '
                     f'traceback {traceback}: {message[-600:]}')
      continue
    ok, why = _resume_matches(ctx, workdir, log)
    row.add(ok and found is not None, why or f'{workdir}: finished without a save on the signal')
  return stopped_at


def row_sigterm(ctx: Context, trials: int) -> Row:
  row = Row('SIGTERM (preemption)')
  stopped_at = _stop_mid_training(ctx, trials, row, signal.SIGTERM, 'sigterm')
  row.outcome = (f'{row.passed}/{row.trials} saved at the next step (steps {stopped_at} of 18), exited 0, resumed '
                 'identical')
  return row


def row_sigint(ctx: Context, trials: int) -> Row:
  row = Row('SIGINT (Ctrl-C)')
  stopped_at = _stop_mid_training(ctx, trials, row, signal.SIGINT, 'sigint')
  row.outcome = (f'{row.passed}/{row.trials} saved at the next step (steps {stopped_at} of 18), exited 130 without '
                 'a traceback, resumed identical')
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
      row.skip(trials - row.trials)
      row.outcome = f'skipped ({row.skipped} trials): `mount -t tmpfs` is not permitted here (needs root)'
      shutil.rmtree(folder)
      shutil.move(saved, folder)
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
      eval_ok = params_sha256(restored.state.params) == ctx.step_digests[last]
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
        ok = good is not None and params_sha256(good.state.params) == ctx.step_digests[good.step]
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
    time.sleep(0.01)
  # The first run is paused while it holds the lock, so the second meets a running run however fast the first
  # would otherwise finish (a tiny run ends within seconds of taking the lock); it continues afterwards.
  if first.poll() is None:
    os.killpg(first.pid, signal.SIGSTOP)
  try:
    rc = finish(run_command(ctx.root, workdir), workdir + '-second.log')
  finally:
    os.killpg(first.pid, signal.SIGCONT)
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


# ---- outputs, restores, readers, decoding and the file system (issue 15) ----------------------------------------


def sha256_tree(folder: str) -> dict[str, str]:
  """{path relative to folder: sha256 of its bytes} of every file under folder (links as their target's name)."""
  import hashlib  # pylint: disable=g-import-not-at-top
  found = {}
  for dirpath, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(dirpath, name)
      if os.path.islink(path):
        found[os.path.relpath(path, folder)] = 'link → ' + os.readlink(path)
        continue
      with open(path, 'rb') as f:
        found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
  return found


def capture(command: Sequence[str], cwd: str = REPO, prefix: Sequence[str] = (), timeout: float = 600
            ) -> tuple[int, list[dict[str, Any]], str]:
  """Runs a command to its end; returns its exit status, the JSON objects of its stdout lines (a line that is not
  JSON is left out), and its stdout and stderr together."""
  try:
    result = subprocess.run([*prefix, *command], cwd=cwd, env=_env(), capture_output=True, text=True,
                            errors='replace', timeout=timeout, check=False)
  except subprocess.TimeoutExpired as error:
    return -9, [], f'timed out after {timeout} s: {error.stdout or ""}{error.stderr or ""}'
  lines = []
  for text in result.stdout.splitlines():
    if text.startswith('{'):
      try:
        lines.append(json.loads(text))
      except ValueError:
        pass
  return result.returncode, lines, result.stdout + result.stderr


def predict_command(workdir: str, *args: str) -> list[str]:
  """The lungjax.tools.predict command line."""
  return [sys.executable, '-m', 'lungjax.tools.predict', f'--workdir={workdir}', *args]


def eval_command(workdir: str, folder: str, *extra: str) -> list[str]:
  """The lungjax.main --mode=eval command line of the matrix's tiny config."""
  return [sys.executable, '-m', 'lungjax.main', f'--config={os.path.join(REPO, "configs", "tiny.py")}',
          '--mode=eval', f'--workdir={workdir}', f'--config.eval.dir={folder}', '--config.eval.n_bootstrap=50',
          *extra]


def _classified(lines: Sequence[dict[str, Any]], n: int) -> bool:
  """n JSON lines, each with a class and probabilities (no error)."""
  return len(lines) == n and all('class' in line and 'probabilities' in line and 'error' not in line
                                 for line in lines)


def _image(ctx: Context, index: int = 0) -> str:
  """One of the synthetic training images."""
  return os.path.join(ctx.root, 'train', 'Covid', f'{index:03d}.png')


def row_overwrite(ctx: Context) -> Row:
  """predict --gradcam_dir in the folder of its inputs, a foreign file where an overlay goes, and eval of a folder
  named `test`: no input changes, overlays keep the input's whole name, a foreign file is an error naming it, and
  training's own eval/test report stays as it was."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from lungjax.runtime import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  row = Row('overwrite safety: outputs beside the inputs')
  here, _ = ctx.fresh('overwrite')
  os.makedirs(os.path.join(here, 'pair'))
  shutil.copy(_image(ctx), os.path.join(here, 'scan.png'))
  Image.open(_image(ctx, 1)).convert('RGB').save(os.path.join(here, 'pair', 'x.jpg'))
  shutil.copy(_image(ctx, 2), os.path.join(here, 'pair', 'x.png'))  # Unrelated to x.jpg.

  def check(name: str, args: Sequence[str], n_lines: int, overlays: Sequence[str]) -> None:
    before = sha256_tree(here)
    rc, lines, output = capture(predict_command(ctx.reference, *args), cwd=here)
    after = sha256_tree(here)
    changed = [p for p, digest in before.items()  # The overlays and the list of what lungjax wrote may change.
               if after.get(p) != digest and p not in overlays and os.path.basename(p) != workdir_lib.MANIFEST]
    missing = [p for p in overlays if p not in after]
    row.add(rc == 0 and _classified(lines, n_lines) and not changed and not missing,
            f'{name}: exit {rc}, {len(lines)} lines, changed {changed}, overlays missing {missing}: {output[-600:]}')

  check('--gradcam_dir=. scan.png', ['--gradcam_dir=.', 'scan.png'], 1, ['scan.png.gradcam.png'])
  check('--gradcam_dir=. pair (x.jpg, x.png)', ['--gradcam_dir=.', 'pair'], 2,
        ['pair/x.jpg.gradcam.png', 'pair/x.png.gradcam.png'])
  check('the first command again (its own overlay)', ['--gradcam_dir=.', 'scan.png'], 1, ['scan.png.gradcam.png'])
  foreign = os.path.join(here, 'out', 'scan.png.gradcam.png')
  os.makedirs(os.path.dirname(foreign))
  with open(foreign, 'wb') as f:
    f.write(b'a file lungjax did not write\n')
  before = sha256_tree(here)
  rc, lines, output = capture(predict_command(ctx.reference, '--gradcam_dir=out', 'scan.png'), cwd=here)
  row.add(rc != 0 and 'out/scan.png.gradcam.png' in output and sha256_tree(here) == before and not lines,
          f'foreign overlay name: exit {rc}, untouched {sha256_tree(here) == before}, {len(lines)} lines: '
          f'{output[-600:]}')
  # A run whose data has a test split (its report: eval/test), then eval of another folder named test.
  data = os.path.join(ctx.work, 'data-with-test')
  if not os.path.isdir(data):
    shutil.copytree(ctx.root, data)
    for name in os.listdir(os.path.join(data, 'train')):
      for image in sorted(os.listdir(os.path.join(data, 'train', name)))[:4]:
        os.makedirs(os.path.join(data, 'test', name), exist_ok=True)
        shutil.copy(os.path.join(data, 'train', name, image), os.path.join(data, 'test', name, image))
  other = os.path.join(here, 'elsewhere', 'test')
  for name in os.listdir(os.path.join(data, 'test')):
    shutil.copytree(os.path.join(data, 'test', name), os.path.join(other, name))
    os.remove(os.path.join(other, name, sorted(os.listdir(os.path.join(other, name)))[0]))  # Not the same folder.
  workdir, log = ctx.fresh('overwrite-eval')
  rc = finish(run_command(data, workdir, '--config.train.num_epochs=1'), log)
  own = sha256_tree(os.path.join(workdir, 'eval', 'test'))
  eval_rc = finish(eval_command(workdir, other), log)
  kept = bool(own) and sha256_tree(os.path.join(workdir, 'eval', 'test')) == own
  written = os.path.isfile(os.path.join(workdir, 'eval', 'folder-' + workdir_lib.folder_identity([other]), 'report.md'))
  row.add(rc == 0 and eval_rc == 0 and kept and written,
          f'eval of a folder named test: train exit {rc}, eval exit {eval_rc}, eval/test kept {kept} '
          f'({len(own)} files), eval/folder-test-<hash> written {written}: {tail(log, 600)}')
  row.outcome = (f'{row.passed}/{row.trials}: --gradcam_dir=. beside scan.png, and beside x.jpg and an unrelated '
                 'x.png, left every input byte-identical (overlays x.jpg.gradcam.png, x.png.gradcam.png), and again '
                 'over its own overlays; a foreign file where an overlay goes: refused naming it, nothing written; '
                 'eval of a folder named test wrote eval/folder-test-<hash> and left the run\'s eval/test byte-identical')
  return row


def row_class_mismatch(ctx: Context) -> Row:
  """A restore asked for other classes than the checkpoint's own record: eval with reordered classes, predict and
  eval on a workdir whose config.json was tampered with, and a resume with changed classes: each refused naming
  config.data.classes; the refused resume leaves the workdir byte-identical."""
  row = Row('restores with other classes than the checkpoint\'s')
  reordered = "('Normal','Covid','Viral Pneumonia')"
  workdir, _ = ctx.fresh('classes-eval')
  shutil.copytree(ctx.reference, workdir)
  before = sha256_tree(workdir)
  rc, _, output = capture(eval_command(workdir, os.path.join(ctx.root, 'train'), f'--config.data.classes={reordered}'))
  row.add(rc != 0 and 'config.data.classes' in output and sha256_tree(workdir) == before,
          f'eval --config.data.classes={reordered}: exit {rc}: {output[-600:]}')
  tampered, _ = ctx.fresh('classes-tampered')
  shutil.copytree(ctx.reference, tampered)
  config_path = os.path.join(tampered, 'config.json')
  with open(config_path) as f:
    saved = json.load(f)
  saved['data']['classes'] = ['Normal', 'Covid', 'Viral Pneumonia']
  with open(config_path, 'w') as f:
    json.dump(saved, f, indent=2)
  rc, lines, output = capture(predict_command(tampered, _image(ctx)))
  row.add(rc != 0 and 'config.data.classes' in output and not any('class' in line for line in lines),
          f'predict, config.json classes reordered: exit {rc}, {len(lines)} lines: {output[-600:]}')
  rc, _, output = capture(eval_command(tampered, os.path.join(ctx.root, 'train')))
  row.add(rc != 0 and 'config.data.classes' in output,
          f'eval, config.json classes reordered: exit {rc}: {output[-600:]}')
  resumed, log = ctx.fresh('classes-resume')
  shutil.copytree(ctx.reference, resumed)
  before = sha256_tree(resumed)
  rc = finish(run_command(ctx.root, resumed, f'--config.data.classes={reordered}'), log)
  after = sha256_tree(resumed)
  changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
  row.add(rc != 0 and 'classes' in tail(log, 4000) and not changed,
          f'resume with reordered classes: exit {rc}, changed {changed}: {tail(log, 600)}')
  row.outcome = (f'{row.passed}/{row.trials}: eval with reordered config.data.classes, predict and eval after '
                 'config.json\'s classes were reordered: each exited non-zero naming config.data.classes; the '
                 'refused resume with reordered classes left every file of the workdir (config.json too) '
                 'byte-identical')
  return row


def row_read_while_training(ctx: Context, trials: int) -> Row:
  """`trials` predicts, one after another, on a workdir whose training run saves a step every epoch and deletes the
  one before (keep_latest=1, keep_best=1, best by validation loss): each must classify, none may say corrupt."""
  row = Row('predict while a training run saves and deletes steps')
  workdir, log = ctx.fresh('readwhile')
  training = start(run_command(ctx.root, workdir, '--config.train.num_epochs=2000', '--config.checkpoint.keep_latest=1',
                               '--config.checkpoint.keep_best=1', '--config.checkpoint.best_metric=loss'), log)
  try:
    while training.poll() is None and not committed_steps(workdir):
      time.sleep(0.05)
    first = committed_steps(workdir)
    for trial in range(trials):
      rc, lines, output = capture(predict_command(workdir, _image(ctx, trial % 12)), timeout=300)
      running = training.poll() is None
      said_corrupt = 'corrupt' in output.lower()
      row.add(rc == 0 and _classified(lines, 1) and not said_corrupt and running,
              f'predict {trial}: exit {rc}, {len(lines)} lines, "corrupt" {said_corrupt}, training running '
              f'{running}: {output[-600:]}')
    last = committed_steps(workdir)
  finally:
    if training.poll() is None:
      training.send_signal(signal.SIGTERM)  # Saves and exits 0.
    training_rc = training.wait(300)
  if training_rc != 0:
    row.add(False, f'{workdir}: the training run exited {training_rc}: {tail(log, 600)}')
  span = f'steps {first} → {last}' if first and last else 'no steps'
  row.outcome = (f'{row.passed}/{row.trials} predicts classified while the run trained ({span}, 6 steps an epoch, '
                 'each save deleting the step before); none said "corrupt"')
  return row


_BIG_PNG = r'''
import sys
from PIL import Image
side = 9400  # 88 Mpixels: under PIL.Image.MAX_IMAGE_PIXELS (89 M), so Pillow decodes it.
ramp = Image.linear_gradient('L').resize((side, side), Image.Resampling.NEAREST)
alpha = Image.radial_gradient('L').resize((side, side), Image.Resampling.NEAREST)
Image.merge('RGBA', (ramp, ramp.transpose(Image.Transpose.ROTATE_90), Image.new('L', (side, side), 128),
                     alpha)).save(sys.argv[1], compress_level=9)  # About 400 KB.
'''

# Runs the command after it and prints its peak resident memory (kB) and seconds: the only child of this process.
_PEAK = r'''
import resource, subprocess, sys, time
began = time.perf_counter()
rc = subprocess.run(sys.argv[1:], check=False).returncode
print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - began, rc, flush=True)
'''

DECODE_PEAK_LIMIT = 1 << 30  # Issue 15: the 9400 x 9400 PNG decodes in under 1 GB.


def measure_peak(command: Sequence[str]) -> tuple[int, int, float, list[dict[str, Any]], str]:
  """Runs command; returns its exit status, peak RSS in bytes and seconds, its JSON lines and output."""
  rc, lines, output = capture([sys.executable, '-c', _PEAK, *command])
  found = re.search(r'^PEAK (\d+) ([\d.]+) (-?\d+)$', output, re.MULTILINE)
  if rc != 0 or not found:
    return rc or -1, 0, 0.0, lines, output
  return int(found.group(3)), int(found.group(1)) * 1024, float(found.group(2)), lines, output


def row_bounded_decoding(ctx: Context) -> Row:
  """A small 9400 x 9400 RGBA PNG (88 Mpixels, just under Pillow's bomb limit): images.load_image alone in a
  subprocess must peak under 1 GiB RSS; lungjax.tools.predict must classify it, its peak less than 1 GiB above its peak on
  a small image (what JAX and the model take)."""
  row = Row('a 9400 x 9400 RGBA PNG of a few hundred KB')
  folder, _ = ctx.fresh('bigpng')
  os.makedirs(folder)
  path = os.path.join(folder, 'big.png')
  rc, _, output = capture([sys.executable, '-c', _BIG_PNG, path])
  if rc != 0:
    row.add(False, f'making {path} failed: {output[-600:]}')
    row.outcome = 'the test image could not be made'
    return row
  load = ('from lungjax.data import images; import sys; '
          'print(images.load_image(sys.argv[1], 256).pixels_HWC.shape)')
  rc, load_peak, load_seconds, _, output = measure_peak([sys.executable, '-c', load, path])
  row.add(rc == 0 and '(256, 256, 3)' in output and load_peak < DECODE_PEAK_LIMIT,
          f'load_image: exit {rc}, peak {load_peak / 2**20:.0f} MiB, {load_seconds:.1f} s: {output[-600:]}')
  rc, small_peak, _, lines, output = measure_peak(predict_command(ctx.reference, _image(ctx)))
  small_ok = rc == 0 and _classified(lines, 1)
  rc, predict_peak, predict_seconds, lines, output = measure_peak(predict_command(ctx.reference, path))
  row.add(small_ok and rc == 0 and _classified(lines, 1) and predict_peak - small_peak < DECODE_PEAK_LIMIT,
          f'predict: exit {rc}, peak {predict_peak / 2**20:.0f} MiB ({small_peak / 2**20:.0f} MiB on a 48x40 image, '
          f'which classified {small_ok}), {predict_seconds:.1f} s: {output[-600:]}')
  row.outcome = (f'{row.passed}/{row.trials} decoded in under 1 GiB ({os.path.getsize(path) / 1e3:.0f} KB file): '
                 f'images.load_image in a subprocess peaked at {load_peak / 2**20:.0f} MiB RSS in '
                 f'{load_seconds:.1f} s; lungjax.tools.predict classified it in {predict_seconds:.1f} s, peak '
                 f'{predict_peak / 2**20:.0f} MiB, {(predict_peak - small_peak) / 2**20:.0f} MiB above its '
                 f'{small_peak / 2**20:.0f} MiB on a 48x40 image (JAX and the model)')
  return row


_KILL_AT = (  # python -c: runs lungjax.main with argv, kill -9 itself when the file named by argv[1] is renamed in.
    'import os, runpy, signal, sys\n'
    'target, real = sys.argv[1], os.replace\n'
    'def replace(src, dst, **kwargs):\n'
    '  real(src, dst, **kwargs)\n'
    '  if os.path.basename(str(dst)) == target:\n'
    '    os.kill(os.getpid(), signal.SIGKILL)\n'
    'os.replace = replace\n'
    'sys.argv = ["lungjax.main", *sys.argv[2:]]\n'
    'runpy.run_module("lungjax.main", run_name="__main__")\n')


def row_reports(ctx: Context) -> Row:
  """Issue 26: a planted symlink in a report folder, two eval folders of one name, kill -9 between a report's files,
  and a prepared root changed after `lungjax prepare`: never written through, never replaced, never read as whole,
  never reused."""
  from lungjax.runtime import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  row = Row('report folders: planted links, name collisions, kill -9 mid-report, a changed prepared root')
  here, log = ctx.fresh('reports')
  workdir = os.path.join(here, 'run')
  shutil.copytree(ctx.reference, workdir)
  sites = []
  for site, drop in (('site-a', 0), ('site-b', 2)):
    folder = os.path.join(here, site, 'test')
    for name in os.listdir(os.path.join(ctx.root, 'train')):
      shutil.copytree(os.path.join(ctx.root, 'train', name), os.path.join(folder, name))
      for image in sorted(os.listdir(os.path.join(folder, name)))[:drop]:
        os.remove(os.path.join(folder, name, image))
    sites.append(folder)
  out_dir = lambda folder: os.path.join(workdir, 'eval', 'folder-' + workdir_lib.folder_identity([folder]))
  # 1. A symbolic link planted where metrics.json goes: eval refuses, the linked file is untouched.
  precious = os.path.join(here, 'precious.txt')
  with open(precious, 'w') as f:
    f.write('precious')
  os.makedirs(out_dir(sites[0]))
  os.symlink(precious, os.path.join(out_dir(sites[0]), 'metrics.json'))
  rc, _, output = capture(eval_command(workdir, sites[0]))
  kept = open(precious).read() == 'precious'
  row.add(rc != 0 and kept and 'symbolic link' in output,
          f'planted link: exit {rc}, target kept {kept}: {output[-600:]}')
  os.remove(os.path.join(out_dir(sites[0]), 'metrics.json'))
  # 2. Two folders named test: two reports, the first unchanged by the second.
  rc_a = finish(eval_command(workdir, sites[0]), log)
  first = sha256_tree(out_dir(sites[0]))
  rc_b = finish(eval_command(workdir, sites[1]), log)
  counts = [json.load(open(os.path.join(out_dir(f), 'metrics.json')))['n_images'] for f in sites]
  row.add(rc_a == rc_b == 0 and out_dir(sites[0]) != out_dir(sites[1]) and sha256_tree(out_dir(sites[0])) == first
          and counts[0] > counts[1], f'collision: exits {rc_a} {rc_b}, images {counts}: {tail(log, 600)}')
  # 3. kill -9 right after metrics.json of a rewrite is in place: the folder is not read as whole.
  rc = finish([sys.executable, '-c', _KILL_AT, 'metrics.json', *eval_command(workdir, sites[1])[3:]], log)
  try:
    workdir_lib.check_unit(out_dir(sites[1]))
    caught = False
  except workdir_lib.IncompleteFolderError:
    caught = True
  rerun = finish(eval_command(workdir, sites[1]), log)
  whole = workdir_lib.unit_problems(out_dir(sites[1])) == []
  row.add(rc == -signal.SIGKILL and caught and rerun == 0 and whole,
          f'kill -9 mid-report: exit {rc}, incomplete caught {caught}, rerun exit {rerun}, whole after {whole}: '
          f'{tail(log, 600)}')
  # 4. A prepared root with an image deleted after prepare: prepare and training refuse, naming it.
  root = os.path.join(here, 'prepared-root')
  shutil.copytree(ctx.root, root)
  prepared_dir = os.path.join(here, 'prepared')
  prepare = [sys.executable, '-m', 'lungjax.tools.prepare', f'--config={os.path.join(REPO, "configs", "tiny.py")}',
             f'--config.data.root={root}', f'--config.data.prepared_dir={prepared_dir}']
  rc_prepare = finish(prepare, log)
  gone = sorted(os.listdir(os.path.join(root, 'train', 'Normal')))[0]
  os.remove(os.path.join(root, 'train', 'Normal', gone))
  rc_reuse, _, reuse_output = capture(prepare)
  rc_train, _, train_output = capture(run_command(root, os.path.join(here, 'prepared-run'),
                                                  f'--config.data.prepared_dir={prepared_dir}'))
  named = f'1 removed (train/Normal/{gone})'
  row.add(rc_prepare == 0 and rc_reuse != 0 and rc_train != 0 and named in reuse_output and named in train_output,
          f'changed prepared root: prepare {rc_prepare}, reuse {rc_reuse}, train {rc_train}: '
          f'{reuse_output[-400:]} {train_output[-400:]}')
  row.outcome = (f'{row.passed}/{row.trials}: a link planted at eval/folder-*/metrics.json: eval exited non-zero '
                 'naming it, its target unchanged; two folders named test (different images): two reports '
                 f'(eval/folder-test-<hash>, {counts[0]} and {counts[1]} images), the first byte-identical; kill -9 '
                 'after metrics.json of a rewrite: check_unit reports the folder incomplete, the rerun completes it; '
                 f'an image deleted from a prepared root: prepare and training from prepared_dir refused naming it')
  return row


def unprivileged_prefix() -> tuple[str, ...] | None:
  """A command prefix under which chmod 000 makes a file unreadable: none needed for a non-root user; for root,
  setpriv dropping the capabilities that bypass file permissions; None where neither works."""
  if os.geteuid() != 0:
    return ()
  prefix = ('setpriv', '--inh-caps=-dac_override,-dac_read_search', '--bounding-set=-dac_override,-dac_read_search')
  probe = os.path.join(tempfile.mkdtemp(prefix='lungjax-faults-'), 'probe')
  try:
    with open(probe, 'w') as f:
      f.write('x')
    os.chmod(probe, 0)
    result = subprocess.run([*prefix, 'cat', probe], capture_output=True, check=False)
    return prefix if result.returncode != 0 and b'denied' in result.stderr else None
  except OSError:
    return None
  finally:
    shutil.rmtree(os.path.dirname(probe), ignore_errors=True)


def row_filesystem(ctx: Context) -> Row:
  """A dangling link, a link loop and an unreadable file (chmod 000; as root, run without the capabilities that
  read it anyway) in a training class folder: training names each, skips and lists them with skip_bad_images, and
  the audit reports them (and a folder it cannot list) under `unreadable`."""
  row = Row('dangling link, link loop, unreadable file in the data')
  prefix = unprivileged_prefix()
  kinds = {'dangling link': 'dangling.png', 'link loop': 'loop.png'}
  if prefix is not None:
    kinds['unreadable file'] = 'secret.png'
  locked, unlisted = [], []

  def add_bad(root: str, kind: str) -> str:
    path = os.path.join(root, 'train', 'Covid', kinds[kind])
    if kind == 'dangling link':
      os.symlink(os.path.join(root, 'gone.png'), path)
    elif kind == 'link loop':
      os.symlink(os.path.basename(path), path)
    else:
      shutil.copy(_image(ctx), path)
      os.chmod(path, 0)
      locked.append(path)
    return path

  all_bad = os.path.join(ctx.work, 'data-filesystem')
  try:
    shutil.copytree(ctx.root, all_bad)
    bad_paths = [add_bad(all_bad, kind) for kind in kinds]
    for kind in kinds:
      root = os.path.join(ctx.work, f'data-filesystem-{kinds[kind].split(".")[0]}')
      shutil.copytree(ctx.root, root)
      path = add_bad(root, kind)
      workdir, log = ctx.fresh('filesystem')
      rc = finish(run_command(root, workdir, '--config.train.num_epochs=1'), log, prefix=prefix or ())
      message = tail(log, 4000)
      row.add(rc != 0 and path in message and not committed_steps(workdir),
              f'{kind}: exit {rc}, named {path in message}: {message[-600:]}')
    workdir, log = ctx.fresh('filesystem-skip')
    rc = finish(run_command(all_bad, workdir, '--config.train.num_epochs=1', '--config.data.skip_bad_images=True'),
                log, prefix=prefix or ())
    skipped = []
    if rc == 0:
      with open(os.path.join(workdir, 'summary.json')) as f:
        skipped = [path for path, _ in json.load(f)['skipped_images']]
    row.add(rc == 0 and sorted(skipped) == sorted(bad_paths),
            f'skip_bad_images: exit {rc}, skipped {skipped}: {tail(log, 600)}')
    if prefix is not None:
      unlisted.append(os.path.join(all_bad, 'train', 'Private'))  # A sub-folder the audit cannot list.
      os.makedirs(unlisted[0])
      shutil.copy(_image(ctx), os.path.join(unlisted[0], 'hidden.png'))
      os.chmod(unlisted[0], 0)
      locked.append(unlisted[0])
    out = os.path.join(ctx.work, 'filesystem-audit')
    rc, _, output = capture([sys.executable, '-m', 'lungjax.tools.audit', os.path.join(all_bad, 'train'), f'--out={out}'],
                            cwd=ctx.work, prefix=prefix or ())
    listed = []
    if rc == 0:
      with open(os.path.join(out, 'audit.json')) as f:
        report = json.load(f)
      listed = [os.path.abspath(os.path.join(ctx.work, item['path']))
                for stats in report['folders'] for item in stats['unreadable']]
    row.add(rc == 0 and sorted(listed) == sorted(os.path.abspath(p) for p in bad_paths + unlisted),
            f'audit: exit {rc}, unreadable {listed}: {output[-600:]}')
  finally:
    for path in locked:
      os.chmod(path, 0o755)
  if prefix is None:
    row.skip()  # The unreadable file's own run.
  unreadable = ('an unreadable file (chmod 000' + (', run without root\'s file-permission capabilities)'
                                                    if os.geteuid() == 0 else ')')
                if prefix is not None else 'no unreadable file (root, and setpriv cannot drop its capabilities here)')
  row.outcome = (f'{row.passed}/{row.trials}: a dangling link, a link loop and {unreadable} in a class folder: '
                 'training exited non-zero naming each, trained with skip_bad_images listing them in summary.json\'s '
                 'skipped_images, and lungjax.tools.audit exited 0 listing them' +
                 (' and a sub-folder it could not list' if unlisted else '') + ' under unreadable')
  return row


# ---- the matrix --------------------------------------------------------------------------------------------------


ROWS = ('kill', 'save_kill', 'chain', 'sigterm', 'sigint', 'disk', 'flip', 'truncate', 'dtype', 'fingerprint', 'nan',
        'images', 'iterator', 'determinism', 'workdir', 'overwrite', 'class_mismatch', 'read_while_training',
        'bounded_decoding', 'filesystem', 'reports')


def run_matrix(work: str, *, kill_trials: int, save_kill_trials: int, chain_trials: int, sigterm_trials: int,
               disk_trials: int, corrupt_trials: int, determinism_runs: int, sigint_trials: int = 3,
               read_trials: int = 10, seed: int = 0, rows: Sequence[str] = ROWS,
               log: Callable[[str], None] = print) -> list[Row]:
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
      'workdir': (lambda c, n: row_workdir(c), 1), 'sigint': (row_sigint, sigint_trials),
      'overwrite': (lambda c, n: row_overwrite(c), 1), 'class_mismatch': (lambda c, n: row_class_mismatch(c), 1),
      'read_while_training': (row_read_while_training, read_trials),
      'bounded_decoding': (lambda c, n: row_bounded_decoding(c), 1), 'filesystem': (lambda c, n: row_filesystem(c), 1),
      'reports': (lambda c, n: row_reports(c), 1)}
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
    log(f'{row.fault}: {row.outcome} ({time.perf_counter() - began:.0f} s)' +
        (f' [{row.skipped} skipped]' if row.skipped else ''))
    for failure in row.failures:
      log(f'  FAILED: {failure[:1000]}')
  return done


def row_status(row: Row) -> str:
  """'failed' (a trial that ran did not pass), 'skipped' (no trial ran here), 'partly skipped' (some trials could
  not run here; every one that ran passed) or 'passed'. A skipped trial never counts as passed, and a row where no
  trial ran is never a pass."""
  if row.passed < row.trials:
    return 'failed'
  if not row.trials:
    return 'skipped'
  return 'partly skipped' if row.skipped else 'passed'


def row_outcome(row: Row, status: str) -> str:
  """The row's outcome as reported: a skipped row's says so first."""
  if status == 'skipped' and not row.outcome.startswith('skipped'):
    return f'skipped: {row.outcome or "no trial ran"}'
  return row.outcome


def write_results(rows: Sequence[Row], out: str, command: str, seconds: float) -> None:
  """summary.json and README.md (the table and the command)."""
  os.makedirs(out, exist_ok=True)
  statuses = [row_status(r) for r in rows]
  outcomes = [row_outcome(r, status) for r, status in zip(rows, statuses)]
  summary = {'command': command, 'seconds': round(seconds, 1), 'cpu_count': len(os.sched_getaffinity(0)),
             'n_rows': len(rows), **{f'n_rows_{s.replace(" ", "_")}': statuses.count(s)
                                      for s in ('passed', 'failed', 'skipped', 'partly skipped')},
             'rows': [{'fault': r.fault, 'trials': r.trials, 'passed': r.passed, 'skipped': r.skipped,
                       'status': status, 'outcome': outcome, 'failures': r.failures}
                      for r, status, outcome in zip(rows, statuses, outcomes)]}
  with open(os.path.join(out, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  not_run = [f'{r.fault} ({r.skipped})' for r, status in zip(rows, statuses) if r.skipped or status == 'skipped']
  lines = ['# Reliability: the fault matrix', '',
           'Every row is a fault injected into real runs of `configs/tiny.py` (3 epochs of 6 steps) on 36 synthetic '
           'images, each in a subprocess and a tmp folder; "identical" means the sha256 of the final parameters '
           'equals an uninterrupted run\'s. Regenerate with:', '', '```bash', command, '```', '',
           f'({seconds / 60:.1f} minutes on {summary["cpu_count"]} CPU cores.)', '',
           f'{summary["n_rows_passed"]} of {len(rows)} rows passed every trial; {summary["n_rows_failed"]} failed; '
           + (f'trials that could not run here (counted as skipped, never as passed): {", ".join(not_run)}.'
              if not_run else 'no trial was skipped.'), '',
           '| fault | trials | passed | skipped | outcome |', '|---|---|---|---|---|']
  lines += [f'| {r.fault} | {r.trials} | {r.passed} | {r.skipped} | {outcome} |' for r, outcome in zip(rows, outcomes)]
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
                      determinism_runs=FLAGS.determinism_runs, sigint_trials=FLAGS.sigint_trials,
                      read_trials=FLAGS.read_trials, seed=FLAGS.seed, rows=FLAGS.rows or ROWS)
  finally:
    if not FLAGS.work:
      shutil.rmtree(work, ignore_errors=True)
  flag_names = ('kill_trials', 'save_kill_trials', 'chain_trials', 'sigterm_trials', 'sigint_trials', 'disk_trials',
                'corrupt_trials', 'determinism_runs', 'read_trials', 'seed')
  command = 'python -m tests.reliability.faults ' + ' '.join(f'--{n}={FLAGS[n].value}' for n in flag_names)
  if FLAGS.rows:
    command += f' --rows={",".join(FLAGS.rows)}'
  write_results(rows, FLAGS.out, command, time.perf_counter() - began)
  print(f'wrote {os.path.join(FLAGS.out, "summary.json")} and README.md')
  for row in rows:
    if row.skipped:
      print(f'SKIPPED {row.skipped} trial(s) of {row.fault!r} (not counted as passed): {row.outcome}')
  if any(row_status(r) == 'failed' for r in rows):
    sys.exit(1)


if __name__ == '__main__':  # The command's flags, defined only when run: importing this module defines none.
  flags.DEFINE_integer('kill_trials', 20, 'kill -9 at a random moment of a run, then rerun to the end.')
  flags.DEFINE_integer('save_kill_trials', 10, 'kill -9 while a checkpoint tmp folder exists (inside a save).')
  flags.DEFINE_integer('chain_trials', 3, 'runs killed three times before finishing.')
  flags.DEFINE_integer('sigterm_trials', 3, 'SIGTERM mid-training: must save, exit 0 and resume.')
  flags.DEFINE_integer('disk_trials', 2, 'checkpoint folder on a full tmpfs: the run must fail clearly.')
  flags.DEFINE_integer('corrupt_trials', 10, 'byte flips, and as many truncations / deletions, in a saved step.')
  flags.DEFINE_integer('determinism_runs', 10, 'fresh runs that must end with identical parameters.')
  flags.DEFINE_integer('sigint_trials', 3, 'SIGINT (Ctrl-C) mid-training: must save, exit 130 and resume.')
  flags.DEFINE_integer('read_trials', 10, 'predicts on a workdir whose training run saves and deletes steps.')
  flags.DEFINE_list('rows', [], 'Only these rows (names: see ROWS); default all.')
  flags.DEFINE_integer('seed', 0, 'Seeds the trial timings and corruptions.')
  flags.DEFINE_string('out', os.path.join(REPO, 'results', 'reliability'), 'Where summary.json and README.md go.')
  flags.DEFINE_string('work', '', 'Scratch folder (default: a new tmp folder, removed at the end).')
  app.run(main)
