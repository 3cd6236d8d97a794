"""lungjax.runtime.event_writer: TensorBoard event files written by tensorboardX, read back by tensorboard's EventAccumulator."""

import glob
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lungjax.runtime import event_writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _accumulator(logdir):
  """tensorboard's own reader (the [tensorboard] extra, in [test]) over every event file in `logdir`."""
  pytest.importorskip('tensorboard')
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top

  accumulator = event_accumulator.EventAccumulator(str(logdir), size_guidance={
      event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0, event_accumulator.IMAGES: 0,
      event_accumulator.HISTOGRAMS: 0})
  accumulator.Reload()
  return accumulator


def _scalars(accumulator, tag):
  return [(e.step, e.value) for e in accumulator.Scalars(tag)]


def _write_sample(logdir) -> str:
  writer = event_writer.EventFileWriter(str(logdir))
  writer.write_hparams({'model': {'name': 'cnn', 'conv_features': (4, 8)}, 'lr': 1e-3, 'aug': False, 'none': None})
  writer.write_scalars(3, {'train_loss': 0.5, 'val_accuracy': np.float32(0.75)})
  writer.write_scalars(6, {'train_loss': 0.25})
  writer.write_texts(6, {'note': 'héllo'})
  writer.write_histograms(6, {'weights': np.arange(10.0)}, num_buckets={'weights': 5})
  writer.write_images(6, {'picture': np.zeros((4, 5, 3), np.uint8), 'grey': np.ones((2, 4, 5, 1), np.float32)})
  writer.close()
  return writer.path


def test_scalars_texts_histograms_and_images_read_back_by_tensorboard(tmp_path):
  path = _write_sample(tmp_path)
  assert os.path.basename(path).startswith('events.out.tfevents.') and os.path.dirname(path) == str(tmp_path)
  accumulator = _accumulator(tmp_path)
  assert _scalars(accumulator, 'train_loss') == [(3, 0.5), (6, 0.25)]
  assert _scalars(accumulator, 'val_accuracy') == [(3, 0.75)]
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  (text,) = accumulator.Tensors('note/text_summary')
  assert tensor_util.make_ndarray(text.tensor_proto).item().decode() == 'héllo'
  (histogram,) = accumulator.Histograms('weights')
  assert histogram.step == 6 and histogram.histogram_value.num == 10 and histogram.histogram_value.max == 9
  (picture,) = accumulator.Images('picture')
  assert (picture.step, picture.width, picture.height) == (6, 5, 4)
  assert picture.encoded_image_string.startswith(b'\x89PNG')
  assert accumulator.Images('grey')[0].encoded_image_string.startswith(b'\x89PNG')


def test_hparams_read_back_by_tensorboard(tmp_path):
  """The hparams plugin's session_start_info: nested names flattened, sequences by index, None as ''."""
  pytest.importorskip('tensorboard')
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top

  _write_sample(tmp_path)
  accumulator = _accumulator(tmp_path)
  content = accumulator.SummaryMetadata('_hparams_/session_start_info').plugin_data.content
  start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
  assert start.hparams['model.name'].string_value == 'cnn' and start.hparams['lr'].number_value == 1e-3
  assert start.hparams['aug'].bool_value is False and start.hparams['none'].string_value == ''
  assert start.hparams['model.conv_features.1'].number_value == 8
  assert accumulator.SummaryMetadata('_hparams_/experiment').plugin_data.plugin_name == 'hparams'


def test_two_writers_in_one_second_write_two_files_and_a_closed_writer_refuses(tmp_path):
  first, second = event_writer.EventFileWriter(str(tmp_path)), event_writer.EventFileWriter(str(tmp_path))
  first.write_scalars(1, {'a': 1.0})
  second.write_scalars(1, {'a': 2.0})
  first.close()
  second.close()
  assert first.path != second.path and sorted(glob.glob(str(tmp_path / 'events.*'))) == sorted([first.path,
                                                                                                second.path])
  with pytest.raises(ValueError, match='closed'):
    first.write_scalars(2, {'a': 3.0})
  with pytest.raises(ValueError, match='HxWxC'):
    event_writer.EventFileWriter(str(tmp_path / 'x')).write_images(0, {'bad': np.zeros((4, 5))})


_WITHOUT_TENSORFLOW = textwrap.dedent('''
    import sys
    sys.modules['tensorflow'] = None  # As if TensorFlow were not installed: importing it fails.
    from absl import logging
    logging.set_verbosity(logging.INFO)
    from lungjax.runtime import event_writer
    writer = event_writer.create_default_writer(sys.argv[1], asynchronous=True)
    from clu import metric_writers, periodic_actions  # Importable now: EventFileWriter stands in for TF's writer.
    assert isinstance(writer, metric_writers.MetricWriter)
    assert metric_writers.SummaryWriter is event_writer.EventFileWriter
    assert isinstance(event_writer.EventFileWriter(sys.argv[1] + '/other'), metric_writers.MetricWriter)
    writer.write_hparams({'a': 1})
    writer.write_scalars(4, {'train_loss': 1.5})
    periodic_actions.ReportProgress(num_train_steps=10, writer=writer)
    writer.flush()
    writer.close()
    assert sys.modules.get('tensorflow') is None
    print('ok')
''')


def test_clu_writers_work_without_tensorflow(tmp_path):
  """With TensorFlow absent, clu.metric_writers and periodic_actions import and clu's default writer writes event
  files through EventFileWriter."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': REPO}
  run = subprocess.run([sys.executable, '-c', _WITHOUT_TENSORFLOW, str(tmp_path)], env=env, capture_output=True,
                       text=True, timeout=600, check=False)
  assert run.returncode == 0 and run.stdout.strip() == 'ok', run.stderr[-3000:]
  assert 'train_loss' in run.stderr  # clu's LoggingWriter still logs the values.
  assert len(glob.glob(str(tmp_path / 'events.out.tfevents.*'))) == 1
  assert _scalars(_accumulator(tmp_path), 'train_loss') == [(4, 1.5)]


_WITH_TENSORFLOW_INSTALLED = textwrap.dedent('''
    import sys
    from lungjax.runtime import event_writer
    writer = event_writer.create_default_writer(sys.argv[1])
    event_writer.periodic_actions().ReportProgress(num_train_steps=10, writer=writer)
    writer.write_scalars(1, {'train_loss': 0.5})
    writer.close()
    print('tensorflow' in sys.modules)
''')


def test_the_writer_never_imports_tensorflow_even_where_it_is_installed(tmp_path):
  """One path: EventFileWriter writes the event files whether or not TensorFlow is installed, so no training run
  pays TensorFlow's import (8 s a run here)."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': REPO}
  run = subprocess.run([sys.executable, '-c', _WITH_TENSORFLOW_INSTALLED, str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=600, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  assert run.stdout.strip() == 'False', run.stdout
  assert _scalars(_accumulator(tmp_path), 'train_loss') == [(1, 0.5)]


_TRAIN_WITHOUT_TENSORFLOW = textwrap.dedent('''
    import runpy, sys
    for name in ('tensorflow', 'tensorboard', 'keras', 'h5py', 'kagglehub'):
      sys.modules[name] = None  # The core install: none of these importable.
    sys.argv = ['lungjax.main', *sys.argv[1:]]
    try:
      runpy.run_module('lungjax.main', run_name='__main__', alter_sys=True)
    finally:
      assert all(sys.modules.get(name) is None for name in ('tensorflow', 'keras')), 'TensorFlow was imported'
''')


@pytest.mark.slow
def test_a_run_without_tensorflow_writes_event_files(synthetic_root, tmp_path):
  """The core install's training run: trains, checkpoints, evaluates and writes TensorBoard event files."""
  workdir = tmp_path / 'w'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': REPO}
  run = subprocess.run([sys.executable, '-c', _TRAIN_WITHOUT_TENSORFLOW, '--config=tiny',
                        f'--config.data.root={synthetic_root}', f'--workdir={workdir}'], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=1200, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  assert os.path.isdir(workdir / 'checkpoints') and os.path.isfile(workdir / 'summary.json')
  assert len(glob.glob(str(workdir / 'events.out.tfevents.*'))) == 1
  accumulator = _accumulator(workdir)
  assert {'train_loss', 'val_loss', 'val_accuracy'} <= set(accumulator.Tags()['scalars'])
  assert accumulator.SummaryMetadata('_hparams_/session_start_info').plugin_data.plugin_name == 'hparams'
