"""lungjax.host_memory: glibc's malloc is told to keep freed memory, in child processes (it changes the process)."""

import subprocess
import sys

import ml_collections
import pytest

from lungjax import host_memory

_FAULTS = '''
import ctypes, resource, sys
from lungjax import host_memory
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


def test_a_non_boolean_setting_names_the_field():
  with pytest.raises(ValueError, match='config.train.keep_freed_host_memory'):
    host_memory.apply(ml_collections.ConfigDict({'keep_freed_host_memory': 'yes'}))
