"""The fault matrix (tests/reliability/faults.py): every bad-image kind, mid-epoch iterator restores, the results table
(a skipped trial or row is never counted as passed), the helpers of the issue-15 rows, and (slow) every row of the
matrix with one trial each, as CI runs it (the full matrix is `python -m tests.reliability.faults`)."""

import json
import os
import random

import pytest

from tests.reliability import faults


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
  faults.write_results(rows, str(tmp_path), 'python -m tests.reliability.faults --kill_trials=2', 12.0)
  summary = json.load(open(tmp_path / 'summary.json'))
  assert [(r['fault'], r['trials'], r['passed']) for r in summary['rows']] == [('kill -9', 2, 2), ('disk full', 1, 0)]
  assert [r['status'] for r in summary['rows']] == ['passed', 'failed'] and summary['n_rows_failed'] == 1
  readme = open(tmp_path / 'README.md').read()
  assert '| kill -9 | 2 | 2 | 0 | 2/2 identical |' in readme
  assert 'python -m tests.reliability.faults --kill_trials=2' in readme


def test_a_skipped_trial_is_reported_as_skipped_never_as_passed(tmp_path):
  """Issue 13: a row that cannot run here (disk full without root) counts as skipped, not passed; so does a row in
  which no trial ran at all."""
  skipped, partly, empty = faults.Row('disk full', outcome='not run: needs root'), faults.Row('files'), faults.Row('x')
  skipped.skip(2)
  partly.add(True)
  partly.skip()
  faults.write_results([skipped, partly, faults.Row('kill', 1, 1, 'ok'), empty], str(tmp_path),
                       'python -m tests.reliability.faults', 1.0)
  summary = json.load(open(tmp_path / 'summary.json'))
  assert [(r['trials'], r['passed'], r['skipped'], r['status']) for r in summary['rows']] == [
      (0, 0, 2, 'skipped'), (1, 1, 1, 'partly skipped'), (1, 1, 0, 'passed'), (0, 0, 0, 'skipped')]
  assert [r['outcome'] for r in summary['rows']] == ['skipped: not run: needs root', '', 'ok', 'skipped: no trial ran']
  assert (summary['n_rows_passed'], summary['n_rows_skipped'], summary['n_rows_partly_skipped']) == (1, 2, 1)
  readme = open(tmp_path / 'README.md').read()
  assert '| disk full | 0 | 0 | 2 | skipped: not run: needs root |' in readme
  assert '1 of 4 rows passed every trial' in readme
  assert 'counted as skipped, never as passed): disk full (2), files (1), x (0)' in readme


def test_the_disk_full_row_without_mount_rights_is_skipped_not_passed(tmp_path, monkeypatch):
  """The disk-full row where `mount -t tmpfs` is refused (not root): its trials are skipped, none passes, and the
  summary and README say skipped."""
  real_run = faults.subprocess.run

  def fake_finish(command, log_path, prefix=(), timeout=600):  # The 1-epoch run: a workdir with a checkpoint.
    workdir = next(a.split('=', 1)[1] for a in command if a.startswith('--workdir='))
    os.makedirs(os.path.join(workdir, 'checkpoints', '6'))
    return 0

  def refuse_mount(args, *rest, **kwargs):
    if args[0] == 'mount':
      return faults.subprocess.CompletedProcess(args, 32, b'', b'mount: only root can use "--types" option')
    return real_run(args, *rest, **kwargs)

  monkeypatch.setattr(faults, 'finish', fake_finish)
  monkeypatch.setattr(faults.subprocess, 'run', refuse_mount)
  row = faults.row_disk_full(_context(tmp_path), 2)
  assert (row.trials, row.passed, row.skipped, faults.row_status(row)) == (0, 0, 2, 'skipped'), row.outcome
  assert os.listdir(tmp_path / '001-diskfull' / 'checkpoints') == ['6']  # Put back as it was.
  faults.write_results([row], str(tmp_path / 'out'), 'python -m tests.reliability.faults --rows=disk', 1.0)
  summary = json.load(open(tmp_path / 'out' / 'summary.json'))
  assert (summary['n_rows_passed'], summary['n_rows_skipped']) == (0, 1)
  assert summary['rows'][0]['outcome'].startswith('skipped') and summary['rows'][0]['passed'] == 0
  assert '0 of 1 rows passed every trial' in open(tmp_path / 'out' / 'README.md').read()


def test_sha256_tree_sees_every_changed_byte_and_new_file(tmp_path):
  (tmp_path / 'a').mkdir()
  (tmp_path / 'a' / 'x.png').write_bytes(b'1')
  os.symlink('x.png', tmp_path / 'a' / 'link.png')
  before = faults.sha256_tree(str(tmp_path))
  assert sorted(before) == ['a/link.png', 'a/x.png'] and before['a/link.png'] == 'link → x.png'
  (tmp_path / 'a' / 'x.png').write_bytes(b'2')
  assert faults.sha256_tree(str(tmp_path))['a/x.png'] != before['a/x.png']
  (tmp_path / 'a' / 'x.png').write_bytes(b'1')
  (tmp_path / 'new').write_bytes(b'')
  assert faults.sha256_tree(str(tmp_path)) == {**before, 'new': faults.sha256_tree(str(tmp_path))['new']}


def test_an_unprivileged_prefix_makes_chmod_000_unreadable_or_is_none(tmp_path):
  """The filesystem row's unreadable file: real for a non-root user; for root, only under the returned prefix."""
  import subprocess
  prefix = faults.unprivileged_prefix()
  if prefix is None:
    pytest.skip('root, and setpriv cannot drop the file-permission capabilities here: that trial is counted skipped')
  secret = tmp_path / 'secret'
  secret.write_text('x')
  os.chmod(secret, 0)
  try:
    assert subprocess.run([*prefix, 'cat', str(secret)], capture_output=True, check=False).returncode != 0
  finally:
    os.chmod(secret, 0o644)


def test_unknown_row_is_refused(tmp_path):
  with pytest.raises(ValueError, match='unknown'):
    faults.run_matrix(str(tmp_path), kill_trials=0, save_kill_trials=0, chain_trials=0, sigterm_trials=0,
                      disk_trials=0, corrupt_trials=0, determinism_runs=0, sigint_trials=0, read_trials=0,
                      rows=['nope'])


@pytest.mark.slow
def test_every_row_of_the_fault_matrix_with_one_trial(tmp_path):
  """CI's version of `python -m tests.reliability.faults`: every row with one trial (the fixed rows run their own
  set). Two where the second trial takes another path: the corruption rows' second trial resumes in process (the
  first runs the training command) and, in the truncation row, deletes a file where the first truncates one;
  determinism needs a second run."""
  rows = faults.run_matrix(str(tmp_path), kill_trials=1, save_kill_trials=1, chain_trials=1, sigterm_trials=1,
                           disk_trials=1, corrupt_trials=2, determinism_runs=2, sigint_trials=1, read_trials=1)
  assert len(rows) == len(faults.ROWS)
  for row in rows:
    # Only what cannot run here is skipped (the disk-full row mounts a tmpfs: root only), and it is never counted.
    assert not row.skipped or os.geteuid() != 0 or row.fault.startswith('dangling'), (row.fault, row.outcome)
    assert faults.row_status(row) != 'failed' and row.trials + row.skipped >= 1, (row.fault, row.outcome,
                                                                                   row.failures)
