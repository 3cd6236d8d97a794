"""data/decoding.py: BadImageError names the file; DecodeBudget bounds the bytes of the decodes in flight."""

import threading
import time

import pytest

from lungjax.data import decoding, dicom, images


def test_bad_image_error_names_the_file_and_is_one_class_for_every_decoder():
  error = decoding.BadImageError('/x/a.png', 'truncated')
  assert str(error) == "cannot decode image '/x/a.png': truncated" and error.path == '/x/a.png'
  assert isinstance(error, ValueError) and error.reason == 'truncated'
  assert images.BadImageError is decoding.BadImageError and images.DecodeBudget is decoding.DecodeBudget
  assert dicom.OUTLIER_FRACTION == images.OUTLIER_FRACTION == decoding.OUTLIER_FRACTION


def test_an_oversized_request_runs_alone_and_a_released_budget_is_free():
  budget = decoding.DecodeBudget(100)
  with budget.reserve(500) as held:
    assert held == 100 and budget.reserved == 100
  with budget.reserve(-3) as held:
    assert held == 0
  assert budget.reserved == 0 and budget.peak == 100


def test_decode_budget_bounds_the_bytes_in_flight():
  budget = decoding.DecodeBudget(100)
  inside, most = [0], [0]
  lock = threading.Lock()

  def work(nbytes):
    with budget.reserve(nbytes) as held:
      with lock:
        inside[0] += held
        most[0] = max(most[0], inside[0])
      time.sleep(0.02)
      with lock:
        inside[0] -= held

  threads = [threading.Thread(target=work, args=(n,)) for n in [40] * 6 + [500, 30, 30]]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(10)
  assert not any(thread.is_alive() for thread in threads)
  assert most[0] <= 100 and budget.peak <= 100 and budget.reserved == 0
  assert most[0] >= 80  # Decodes that fit run together.
  with pytest.raises(ValueError, match='capacity'):
    decoding.DecodeBudget(0)
