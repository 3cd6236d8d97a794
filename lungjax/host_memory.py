"""Host memory policy for XLA:CPU runs: glibc keeps freed memory for reuse instead of handing it back.

XLA:CPU allocates a train step's large buffers afresh every step; glibc serves them with mmap and unmaps them on
free, so every step page-faults its activations in again (on 2 cores, a third of a core in the kernel and the
first conv layer's 134 MB output 2-3x slower). One malloc arena, no mmap'd chunks and no trimming make the
freed blocks the next step's buffers (results/bench/README.md measures it). Peak RSS does not grow; RSS stays
at the peak instead of shrinking between steps.
"""

from __future__ import annotations

import ctypes
import sys

from absl import logging

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
_SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_ARENA_MAX, 1))


def keep_freed_memory() -> bool:
  """Sets glibc's malloc to reuse freed memory (see the module docstring); False where the C library is not glibc."""
  if not sys.platform.startswith('linux'):
    return False
  libc = ctypes.CDLL(None)
  if not hasattr(libc, 'gnu_get_libc_version') or not hasattr(libc, 'mallopt'):
    return False
  libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  done = all(libc.mallopt(param, value) == 1 for param, value in _SETTINGS)
  if not done:
    logging.warning('glibc refused a mallopt setting; host memory keeps glibc defaults')
  return done


def apply(train_config) -> None:
  """Applies config.train.keep_freed_host_memory (a bool) at the start of a process, logging what was done."""
  value = train_config.get('keep_freed_host_memory', False)
  if not isinstance(value, bool):
    raise ValueError(f'config.train.keep_freed_host_memory={value!r} must be True or False')
  if value:
    logging.info('host memory: %s', 'glibc keeps freed memory for reuse' if keep_freed_memory()
                 else 'not glibc, allocator defaults kept')
