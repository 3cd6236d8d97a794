"""tools/lungs_report.py: the bootstrap interval of a mean and the count of a mask's parts."""

import numpy as np
import pytest

from lungjax.tools import lungs_report


def test_report_bootstrap_and_mask_parts():
  values = np.array([0.8, 0.9, 1.0, 0.7])
  found = lungs_report.bootstrap_mean(values, 500, 0)
  assert found['mean'] == pytest.approx(0.85) and found['n'] == 4
  assert 0.7 <= found['interval'][0] < 0.85 < found['interval'][1] <= 1.0
  assert lungs_report.bootstrap_mean(np.array([]))['mean'] is None
  mask = np.zeros((100, 100), bool)
  mask[20:80, 10:40] = mask[20:80, 60:90] = True  # Two lungs.
  mask[0, 0] = True  # A speck below 1% of the film: not a part.
  assert lungs_report.mask_parts(mask) == 2
  assert lungs_report.mask_parts(np.zeros((10, 10), bool)) == 0
