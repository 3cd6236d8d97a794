"""The fault matrix: every bad-image kind, mid-epoch iterator restores, the results table, and (slow) every row of
the matrix with 2 trials each, as CI runs it (the full matrix is `python -m lungjax.faults`)."""

import json
import os
import random

import pytest

from lungjax import faults


def _context(tmp_path):
  return faults.Context(str(tmp_path), '', None, '', '', {}, 0.0, random.Random(0))


def test_every_bad_image_kind_errors_naming_the_file_or_is_skipped_and_counted(tmp_path):
  row = faults.row_bad_images(_context(tmp_path))
  assert row.trials == 8 and row.passed == row.trials, row.failures


def test_mid_epoch_iterator_restore_yields_exactly_the_rest_with_0_and_2_threads(tmp_path):
  row = faults.row_iterator(_context(tmp_path), 2)
  assert row.trials == 4 and row.passed == row.trials, row.failures


def test_results_table_and_summary(tmp_path):
  rows = [faults.Row('kill -9', 2, 2, '2/2 identical'), faults.Row('disk full', 1, 0, 'failed', ['why'])]
  faults.write_results(rows, str(tmp_path), 'python -m lungjax.faults --kill_trials=2', 12.0)
  summary = json.load(open(tmp_path / 'summary.json'))
  assert [(r['fault'], r['trials'], r['passed']) for r in summary['rows']] == [('kill -9', 2, 2), ('disk full', 1, 0)]
  readme = open(tmp_path / 'README.md').read()
  assert '| kill -9 | 2 | 2 | 2/2 identical |' in readme and 'python -m lungjax.faults --kill_trials=2' in readme


def test_unknown_row_is_refused(tmp_path):
  with pytest.raises(ValueError, match='unknown'):
    faults.run_matrix(str(tmp_path), kill_trials=0, save_kill_trials=0, chain_trials=0, sigterm_trials=0,
                      disk_trials=0, corrupt_trials=0, determinism_runs=0, rows=['nope'])


@pytest.mark.slow
def test_every_row_of_the_fault_matrix_with_two_trials(tmp_path):
  """CI's version of `python -m lungjax.faults`: every row, 2 trials each (the fixed rows run their own set)."""
  rows = faults.run_matrix(str(tmp_path), kill_trials=2, save_kill_trials=2, chain_trials=2, sigterm_trials=2,
                           disk_trials=2, corrupt_trials=2, determinism_runs=2)
  assert len(rows) == len(faults.ROWS)
  for row in rows:
    if row.outcome.startswith('not run') and os.geteuid() != 0:  # The disk-full row mounts a tmpfs: root only.
      continue
    assert row.trials >= 1 and row.passed == row.trials, (row.fault, row.outcome, row.failures)
