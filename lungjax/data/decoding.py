"""What every image decoder shares (data/images.py for PIL formats, data/dicom.py for DICOM): BadImageError, the
byte budget that bounds the decodes in flight, and the bit-depth constants of deep grey images.

A module of its own so that images.py (which hands DICOM files to dicom.py) and dicom.py import it, not each other.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator

# The bit depths a grey image without a PNG sBIT chunk is assumed to have: the smallest that holds its maximum.
COMMON_BIT_DEPTHS = (8, 10, 12, 14, 16)
# A deep grey image without sBIT (or a DICOM without a VOI window) may have at most this fraction of its pixels (at
# least one) read as saturated outliers: clipped to white instead of deciding the scale (see robust_sixteen_bit_scale).
OUTLIER_FRACTION = 0.001
# Where data/dicom.py leaves a decoded DICOM's warnings (a tuple of str) in its PIL image's info.
WARNINGS_INFO_KEY = 'lungjax_warnings'
# The bytes that decodes in flight may hold together (all threads, all pools): 2 GiB. A decode is estimated from
# its header (decode_bytes_estimate); one larger than the budget runs alone.
DECODE_MEMORY_BUDGET = 2 << 30


class BadImageError(ValueError):
  """An image file that cannot be decoded; the message names the file."""

  def __init__(self, path: str, reason: str):
    super().__init__(f'cannot decode image {path!r}: {reason}')
    self.path = path
    self.reason = reason


class DecodeBudget:
  """A byte budget that decodes reserve before they load a file: at most `capacity` bytes are reserved at once.

  Requests are served in order (a large one is not starved by small ones); one larger than the capacity reserves
  all of it, i.e. runs alone. Thread pools of any size can share one budget: memory, not the thread count, is bounded.
  """

  def __init__(self, capacity: int):
    if capacity <= 0:
      raise ValueError(f'DecodeBudget capacity must be positive, got {capacity}')
    self.capacity = capacity
    self.reserved = 0
    self.peak = 0  # The most bytes ever reserved at once (for tests and reports).
    self._condition = threading.Condition()
    self._queue: collections.deque[object] = collections.deque()

  @contextlib.contextmanager
  def reserve(self, nbytes: int) -> Iterator[int]:
    """Blocks until `nbytes` (at most the capacity) fit, holds them for the `with` body, and yields them."""
    nbytes = max(0, min(int(nbytes), self.capacity))
    ticket = object()
    with self._condition:
      self._queue.append(ticket)
      try:
        self._condition.wait_for(lambda: self._queue[0] is ticket and self.reserved + nbytes <= self.capacity)
      except BaseException:  # E.g. KeyboardInterrupt: leave the queue, or the requests behind would wait forever.
        self._queue.remove(ticket)
        self._condition.notify_all()
        raise
      self._queue.popleft()
      self.reserved += nbytes
      self.peak = max(self.peak, self.reserved)
      self._condition.notify_all()
    try:
      yield nbytes
    finally:
      with self._condition:
        self.reserved -= nbytes
        self._condition.notify_all()


decode_budget = DecodeBudget(DECODE_MEMORY_BUDGET)
