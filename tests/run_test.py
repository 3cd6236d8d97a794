"""runtime/run.py: open_run holds the workdir and the stop request, builds the mesh and fills the config's defaults;
its Run opens the writer."""

import os
import signal

import pytest

from lungjax.runtime import preemption, run, workdir


def test_open_run_holds_the_workdir_and_catches_sigterm_for_its_block_only(tiny_config, tmp_path):
  folder = str(tmp_path / 'new run')
  before = signal.getsignal(signal.SIGTERM)
  with run.open_run(tiny_config, folder) as opened:
    assert os.path.isdir(folder) and opened.workdir == folder
    assert isinstance(opened.stop, preemption.StopRequest) and signal.getsignal(signal.SIGTERM) is not before
    with pytest.raises(workdir.WorkdirBusyError):  # Held: a second run on it fails.
      with workdir.owned(folder):
        pass
    assert opened.mesh.devices.size >= 1 and opened.batch_sharding.mesh is opened.mesh
  assert signal.getsignal(signal.SIGTERM) is before
  with workdir.owned(folder):  # Released at the end.
    pass


def test_open_run_reads_a_missing_field_as_its_default_and_refuses_a_foreign_folder(tiny_config, tmp_path):
  del tiny_config.train['source_weighting']
  with run.open_run(tiny_config, str(tmp_path / 'old config')) as opened:
    assert opened.config.train.source_weighting == 'none'
  foreign = tmp_path / 'my project'
  foreign.mkdir()
  (foreign / 'summary.json').write_text('{"mine": true}')
  with pytest.raises(workdir.ForeignFolderError):
    with run.open_run(tiny_config, str(foreign)):
      pass


def test_the_writer_writes_event_files_with_the_config_as_hparams(tiny_config, tmp_path):
  folder = str(tmp_path / 'run')
  with run.open_run(tiny_config, folder) as opened:
    writer = opened.open_writer()
    writer.write_scalars(1, {'train_loss': 0.5})
    progress = opened.report_progress(writer, 10)
    progress(1)
    writer.flush()
    writer.close()
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(folder))
  flat = run._flatten({'a': {'b': 1, 'c': (1, 2)}, 'd': 'x'})
  assert flat == {'a.b': 1, 'a.c': '(1, 2)', 'd': 'x'}
