"""lungjax.cpu.host_memory: glibc keeps freed memory under an RSS cap, in child processes (it changes the process)."""

import os
import subprocess
import sys

import ml_collections
import pytest

from lungjax.cpu import host_memory

_FAULTS = '''
import ctypes, resource, sys
from lungjax.cpu import host_memory
applied = host_memory.keep_freed_memory() if sys.argv[1] == 'keep' else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
size = 64 << 20
def touch():
  block = libc.malloc(size); ctypes.memset(block, 1, size); libc.free(ctypes.c_void_p(block))
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5): touch()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''


def _faults(policy: str) -> tuple[str, int]:
  """Minor page faults of 5 malloc / write / free rounds of 64 MB after a first one, in a fresh process."""
  result = subprocess.run([sys.executable, '-c', _FAULTS, policy], capture_output=True, text=True, timeout=120,
                          check=True)
  applied, faults = result.stdout.split()
  return applied, int(faults)


def test_freed_large_blocks_are_reused_instead_of_faulted_in_again():
  applied, kept = _faults('keep')
  if applied == 'False':
    pytest.skip('not glibc')
  _, default = _faults('default')
  assert default > 5 * 16384 // 2  # glibc's default: each 64 MB block is mmap'd afresh (16,384 pages)
  assert kept < 1000, (kept, default)


_CAP = '''
import ctypes, sys, time
from lungjax.cpu import host_memory
mb = 1 << 20
start = host_memory.rss_bytes()
cap_gb = (start + 200 * mb) / 2**30
trims = host_memory.keep_freed_memory_under(cap_gb) if sys.argv[1] == 'cap' else host_memory.keep_freed_memory()
if trims is None or trims is False:
  print('skip'); sys.exit()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
blocks = [libc.malloc(64 * mb) for _ in range(8)]
for block in blocks: ctypes.memset(block, 1, 64 * mb)
for block in blocks: libc.free(ctypes.c_void_p(block))
time.sleep(20 * host_memory.POLL_S)
print((host_memory.rss_bytes() - start) // mb, len(trims) if isinstance(trims, list) else -1)
'''


def _freed_but_resident_mb(policy: str) -> tuple[int, int] | None:
  """RSS growth (MB) after 512 MB were written and freed, and the watcher's trims; None where not glibc."""
  result = subprocess.run([sys.executable, '-c', _CAP, policy], capture_output=True, text=True, timeout=120,
                          check=True)
  if result.stdout.strip() == 'skip':
    return None
  grown, trims = result.stdout.split()
  return int(grown), int(trims)


def test_freed_memory_above_the_cap_is_handed_back():
  kept = _freed_but_resident_mb('keep')
  if kept is None:
    pytest.skip('not glibc')
  assert kept[0] > 400, kept  # Without a cap the 512 MB stay resident for reuse.
  grown, trims = _freed_but_resident_mb('cap')
  assert trims >= 1 and grown < 150, (grown, trims)


@pytest.mark.parametrize('value', ['yes', True, -1.0])
def test_a_bad_setting_names_the_field(value):
  with pytest.raises(ValueError, match='config.train.keep_freed_host_memory_gb'):
    host_memory.apply(ml_collections.ConfigDict({'keep_freed_host_memory_gb': value}))


def test_zero_keeps_glibc_defaults():
  assert host_memory.apply(ml_collections.ConfigDict({'keep_freed_host_memory_gb': 0.0})) is None


def test_accelerator_runs_keep_glibc_defaults(monkeypatch):
  monkeypatch.setattr(host_memory, 'accelerator_platform', lambda: 'tpu')
  assert host_memory.apply(ml_collections.ConfigDict({'keep_freed_host_memory_gb': 2.0})) is None


def test_accelerator_platform_reads_jax_platforms():
  script = 'from lungjax.cpu import host_memory; print(host_memory.accelerator_platform())'
  for platforms, expected in (('tpu', 'tpu'), ('cpu', 'None'), ('cuda,cpu', 'cuda')):
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120, check=True,
                            env={**os.environ, 'JAX_PLATFORMS': platforms})
    assert result.stdout.strip() == expected, (platforms, result.stdout)


def test_apply_does_not_start_the_backend():
  # mallopt must precede XLA's threads (their arenas would stay otherwise): apply may not start JAX's backend.
  script = ('import ml_collections; from lungjax.cpu import host_memory; from jax._src import xla_bridge; '
            'trims = host_memory.apply(ml_collections.ConfigDict({"keep_freed_host_memory_gb": 2.0})); '
            'print(trims is not None, xla_bridge.backends_are_initialized())')
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120, check=True,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  applied, started = result.stdout.split()
  if applied == 'False':
    pytest.skip('not glibc')
  assert started == 'False'


def test_one_watcher_a_process():
  script = ('import threading; from lungjax.cpu import host_memory\n'
            'first = host_memory.keep_freed_memory_under(8.0)\n'
            'if first is None: print("skip"); raise SystemExit\n'
            'again = host_memory.keep_freed_memory_under(8.0)\n'
            'try:\n  host_memory.keep_freed_memory_under(4.0); print("no error")\n'
            'except ValueError as e: print("keep_freed_host_memory_gb" in str(e))\n'
            'print(again is first, sum(t.name == "lungjax-host-memory" for t in threading.enumerate()))\n')
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120, check=True)
  if result.stdout.strip() == 'skip':
    pytest.skip('not glibc')
  assert result.stdout.split() == ['True', 'True', '1'], result.stdout
