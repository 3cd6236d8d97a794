"""Progress bars for long steps (decoding, training epochs, evaluation, explain, predict, the audit).

A bar shows only on process 0 and only when stderr is a terminal; otherwise the iterable comes back unchanged, so
logs and redirected output keep the lines they always had.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar('T')


def enabled() -> bool:
  """True when a bar should show: process 0, and stderr is a terminal."""
  try:
    is_terminal = sys.stderr.isatty()
  except (AttributeError, ValueError):  # No stderr, or a closed one.
    return False
  jax = sys.modules.get('jax')  # Not imported (the audit): one process. Imported: only process 0 draws.
  return is_terminal and (jax is None or jax.process_index() == 0)


def progress(iterable: Iterable[T], total: int | None = None, desc: str = '') -> Iterable[T] | Iterator[T]:
  """`iterable` with a tqdm bar on stderr (`total` items, labelled `desc`) when enabled(), else `iterable` itself."""
  if not enabled():
    return iterable
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  try:
    size = os.get_terminal_size(sys.stderr.fileno())
    sized = size.columns > 0 and size.lines > 0
  except (OSError, ValueError, AttributeError):
    sized = False
  # A terminal that reports no size (a bare pseudo-terminal) would hide the bar (tqdm draws none beyond 0 rows):
  # 80 x 24 there.
  return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=sized, ncols=None if sized else 80,
              nrows=None if sized else 24, file=sys.stderr)
