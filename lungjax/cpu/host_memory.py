"""Host memory policy for XLA:CPU runs: glibc keeps freed memory for reuse, under a cap on the process's RSS.

XLA:CPU allocates a train step's buffers afresh every step (about 400 MB for the study CNN at batch 16); glibc
serves them with mmap and unmaps them on free, so every step page-faults its activations in again (on 2 cores, a
third of a core in the kernel and the first conv layer's 134 MB output 2-3x slower). One malloc arena, no mmap'd
chunks and no trimming make the freed blocks the next step's buffers. Kept memory fragments, though: small blocks
land in a freed step buffer, the next one is carved from fresh memory, and the heap grows by a step's buffers a
few times an epoch (full runs of the study config reached 2.9-3.5 GB). So a watcher thread reads the RSS every 50 ms and, above the cap,
hands the free pages back (malloc_trim); the next step faults them in once more. results/bench/README.md measures
speed and peak RSS; benchmarks/host_memory.py sets the policy beside glibc's tunables and jemalloc / tcmalloc.

The policy changes the whole process: `apply` is called once, at start-up, by lungjax.main (and the benchmarks
that time training), and starts at most one watcher thread a process.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import importlib.util
import os
import sys
import threading
import time

from absl import logging

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
_SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_ARENA_MAX, 1))
POLL_S = 0.05
# Above the cap, a trim waits until glibc holds at least this much free memory (below it there is little to gain).
MIN_FREE_TO_TRIM = 64 << 20


class _MallInfo2(ctypes.Structure):
  """glibc's struct mallinfo2 (malloc.h, glibc >= 2.33)."""
  _fields_ = [(name, ctypes.c_size_t) for name in (
      'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]


@functools.cache
def _glibc() -> ctypes.CDLL | None:
  """The process's C library when it is glibc with mallopt, malloc_trim and mallinfo2, else None (looked up once)."""
  if not sys.platform.startswith('linux'):
    return None
  libc = ctypes.CDLL(None)
  if not all(hasattr(libc, name) for name in ('gnu_get_libc_version', 'mallopt', 'malloc_trim', 'mallinfo2')):
    return None
  libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  libc.malloc_trim.argtypes = (ctypes.c_size_t,)
  libc.mallinfo2.restype = _MallInfo2
  return libc


def rss_bytes() -> int:
  """This process's resident set size now, in bytes (Linux)."""
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def free_heap_bytes() -> int:
  """Bytes glibc's heap holds free (freed by the program, not yet handed back); 0 where it is not glibc."""
  libc = _glibc()
  return 0 if libc is None else int(libc.mallinfo2().fordblks)


def release_free_memory() -> bool:
  """Hands glibc's free pages back to the system (malloc_trim); False where the C library is not glibc."""
  libc = _glibc()
  if libc is None:
    return False
  libc.malloc_trim(0)
  return True


def keep_freed_memory() -> bool:
  """Sets glibc's malloc to reuse freed memory (one arena, no mmap, no trim); False where it is not glibc."""
  libc = _glibc()
  if libc is None:
    return False
  done = all(libc.mallopt(param, value) == 1 for param, value in _SETTINGS)
  if not done:
    logging.warning('glibc refused a mallopt setting; host memory keeps glibc defaults')
  return done


def _watch(cap_bytes: int, trims: list[float]) -> None:
  """Trims glibc's free memory whenever the RSS is above the cap and the heap holds enough free memory."""
  while True:
    if rss_bytes() > cap_bytes and free_heap_bytes() >= MIN_FREE_TO_TRIM:
      release_free_memory()
      trims.append(time.monotonic())
    time.sleep(POLL_S)


_watcher: dict[str, tuple[float, list[float]]] = {}  # 'started': (cap_gb, trims) once the thread runs.
_watcher_lock = threading.Lock()


def keep_freed_memory_under(cap_gb: float) -> list[float] | None:
  """keep_freed_memory() plus a daemon thread that trims above cap_gb of RSS; returns its trim times (or None).

  One watcher a process: a second call returns the first one's trim list (a different cap raises ValueError).
  """
  with _watcher_lock:
    if 'started' in _watcher:
      started_gb, trims = _watcher['started']
      if started_gb != cap_gb:
        raise ValueError(f'the host memory watcher already runs with a {started_gb} GB cap, not {cap_gb} GB '
                         '(config.train.keep_freed_host_memory_gb is set once a process)')
      return trims
    if not keep_freed_memory():
      return None
    trims = []
    threading.Thread(target=_watch, args=(int(cap_gb * 2**30), trims), name='lungjax-host-memory',
                     daemon=True).start()
    _watcher['started'] = (cap_gb, trims)
    return trims


def accelerator_platform() -> str | None:
  """What JAX will run on when it is not the CPU (a named platform, a JAX plugin, libtpu), without starting it."""
  import jax  # pylint: disable=g-import-not-at-top
  platforms = jax.config.jax_platforms
  if platforms:
    first = platforms.split(',')[0].strip()
    return None if first == 'cpu' else first
  plugins = sorted(entry.name for entry in importlib.metadata.entry_points(group='jax_plugins'))
  if plugins:
    return f'the {", ".join(plugins)} plugin'
  return 'tpu (libtpu)' if importlib.util.find_spec('libtpu') is not None else None


def setting(train_config) -> float:
  """config.train.keep_freed_host_memory_gb, or ValueError naming it: config_check's hook."""
  value = train_config.keep_freed_host_memory_gb
  if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
    raise ValueError(f'config.train.keep_freed_host_memory_gb={value!r} must be a number of GB >= 0 (0: off)')
  return float(value)


def apply(train_config) -> list[float] | None:
  """Applies config.train.keep_freed_host_memory_gb (0: glibc defaults) to a CPU-backend process, logging it.

  Call it first: glibc's threads keep arenas made before it (XLA's threads start with the backend). It does not start
  the backend; GPU / TPU runs are recognised by an installed JAX plugin or libtpu, or by $JAX_PLATFORMS.
  Returns the watcher's list of trim times (it grows as the process runs), or None when nothing was changed.
  """
  value = setting(train_config)
  if value == 0:
    return None
  if (accelerator := accelerator_platform()) is not None:  # Device buffers do not live in glibc's heap there.
    logging.info('host memory: glibc defaults kept (JAX will use %s)', accelerator)
    return None
  trims = keep_freed_memory_under(value)
  logging.info('host memory: %s', f'glibc keeps freed memory for reuse below {value} GB of RSS'
               if trims is not None else 'not glibc, allocator defaults kept')
  return trims
