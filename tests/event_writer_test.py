"""lungjax.event_writer: TensorBoard event files without TensorFlow, read back by hand and by tensorboard."""

import glob
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lungjax import event_writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fields(data: bytes) -> list[tuple[int, object]]:
  """(field number, value) of a protobuf message: varints as int, 64-bit as 8 bytes, length-delimited as bytes."""
  out, i = [], 0
  while i < len(data):
    key, i = _read_varint(data, i)
    field, wire_type = key >> 3, key & 7
    if wire_type == 0:
      value, i = _read_varint(data, i)
    elif wire_type == 1:
      value, i = data[i:i + 8], i + 8
    elif wire_type == 2:
      length, i = _read_varint(data, i)
      value, i = data[i:i + length], i + length
    else:
      raise ValueError(f'unexpected wire type {wire_type}')
    out.append((field, value))
  return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    byte = data[i]
    value |= (byte & 0x7F) << shift
    i, shift = i + 1, shift + 7
    if not byte & 0x80:
      return value, i


def _one(fields, number):
  values = [v for f, v in fields if f == number]
  assert len(values) == 1, (number, fields)
  return values[0]


def _events(path: str) -> list[dict]:
  """Each Event as {'step', 'file_version', 'values': [(tag, plugin, tensor fields)]}, parsed by hand."""
  events = []
  for record in event_writer.read_tfrecords(path):
    fields = _fields(record)
    event = {'step': dict(fields).get(2, 0), 'file_version': dict(fields).get(3, b'').decode(), 'values': []}
    for summary in (v for f, v in fields if f == 5):
      for value in (v for f, v in _fields(summary) if f == 1):
        value_fields = _fields(value)
        metadata = _fields(_one(value_fields, 9))
        plugin = _fields(_one(metadata, 1))
        event['values'].append((_one(value_fields, 1).decode(), _one(plugin, 1).decode(),
                                _fields(_one(value_fields, 8)), dict(plugin).get(2, b'')))
    events.append(event)
  return events


def _scalar(tensor_fields) -> float:
  assert _one(tensor_fields, 1) == event_writer.DT_FLOAT
  return struct.unpack('<f', _one(tensor_fields, 4))[0]


def _write_sample(logdir) -> str:
  writer = event_writer.EventFileWriter(str(logdir))
  writer.write_hparams({'model': {'name': 'cnn', 'conv_features': (4, 8)}, 'lr': 1e-3, 'aug': False, 'none': None})
  writer.write_scalars(3, {'train_loss': 0.5, 'val_accuracy': np.float32(0.75)})
  writer.write_scalars(6, {'train_loss': 0.25})
  writer.write_texts(6, {'note': 'héllo'})
  writer.write_histograms(6, {'weights': np.arange(10.0)}, num_buckets={'weights': 5})
  writer.write_images(6, {'picture': np.zeros((4, 5, 3), np.uint8)})
  writer.close()
  return writer.path


def test_crc32c_matches_the_standard_check_value():
  assert event_writer.crc32c(b'123456789') == 0xE3069283  # CRC-32C's published check value.
  assert event_writer.crc32c(b'') == 0


def test_events_read_back_by_hand(tmp_path):
  path = _write_sample(tmp_path)
  assert os.path.basename(path).startswith('events.out.tfevents.') and os.path.dirname(path) == str(tmp_path)
  events = _events(path)
  assert events[0]['file_version'] == 'brain.Event:2'
  scalars = [(e['step'], tag, _scalar(tensor)) for e in events for tag, plugin, tensor, _ in e['values']
             if plugin == 'scalars']
  assert scalars == [(3, 'train_loss', 0.5), (3, 'val_accuracy', 0.75), (6, 'train_loss', 0.25)]
  by_plugin = {plugin: (tag, tensor, content) for e in events for tag, plugin, tensor, content in e['values']}
  assert _one(by_plugin['text'][1], 8).decode() == 'héllo'
  histogram = np.frombuffer(_one(by_plugin['histograms'][1], 4), '<f8').reshape(5, 3)
  assert histogram[:, 2].sum() == 10 and histogram[0, 0] == 0 and histogram[-1, 1] == 9
  image_strings = [v for f, v in by_plugin['images'][1] if f == 8]
  assert image_strings[:2] == [b'5', b'4'] and image_strings[2].startswith(b'\x89PNG')
  tag, _, content = by_plugin['hparams']
  assert tag == '_hparams_/session_start_info'
  start = _fields(_one(_fields(content), 3))
  hparams = {}
  for entry in (v for f, v in start if f == 1):
    entry_fields = _fields(entry)
    hparams[_one(entry_fields, 1).decode()] = _fields(_one(entry_fields, 2))[0]
  assert hparams['model.name'] == (3, b'cnn') and hparams['aug'] == (4, 0) and hparams['none'] == (3, b'')
  assert hparams['lr'] == (2, struct.pack('<d', 1e-3)) and hparams['model.conv_features.1'] == (2, struct.pack('<d', 8))


def test_a_cut_or_corrupt_record_is_an_error_naming_the_file(tmp_path):
  path = _write_sample(tmp_path)
  data = bytearray(open(path, 'rb').read())
  data[-6] ^= 0xFF
  corrupt = tmp_path / 'corrupt'
  corrupt.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=f'{corrupt}: record at byte'):
    event_writer.read_tfrecords(str(corrupt))
  cut = tmp_path / 'cut'
  cut.write_bytes(bytes(data[:-20]))
  with pytest.raises(ValueError, match=str(cut)):
    event_writer.read_tfrecords(str(cut))


def test_tensorboard_reads_the_same_values(tmp_path):
  """tensorboard's own reader (the [tensorboard] extra) sees the scalars, the text and the hparams."""
  pytest.importorskip('tensorboard')
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top

  _write_sample(tmp_path)
  accumulator = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  loss = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors('train_loss')]
  assert loss == [(3, 0.5), (6, 0.25)]
  assert accumulator.SummaryMetadata('train_loss').plugin_data.plugin_name == 'scalars'
  text = tensor_util.make_ndarray(accumulator.Tensors('note')[0].tensor_proto)
  assert text.item().decode() == 'héllo'
  histogram = tensor_util.make_ndarray(accumulator.Tensors('weights')[0].tensor_proto)
  assert histogram.shape == (5, 3) and histogram[:, 2].sum() == 10
  content = accumulator.SummaryMetadata('_hparams_/session_start_info').plugin_data.content
  start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
  assert start.hparams['model.name'].string_value == 'cnn' and start.hparams['lr'].number_value == 1e-3
  assert start.hparams['aug'].bool_value is False and len(start.group_name) == 64


def test_hparams_match_tensorboards_own_summary(tmp_path):
  """The session_start_info is what tensorboard.plugins.hparams writes for the same values (but its start time)."""
  pytest.importorskip('tensorboard')
  from tensorboard.plugins.hparams import plugin_data_pb2, summary_v2  # pylint: disable=g-import-not-at-top

  hparams = {'model.name': 'cnn', 'lr': 1e-3, 'aug': False, 'epochs': 10}
  writer = event_writer.EventFileWriter(str(tmp_path))
  writer.write_hparams(hparams)
  writer.close()
  ours = [content for e in _events(writer.path) for _, plugin, _, content in e['values'] if plugin == 'hparams']
  theirs = summary_v2.hparams_pb(hparams, start_time_secs=0).value[0].metadata.plugin_data.content
  ours_pb, theirs_pb = (plugin_data_pb2.HParamsPluginData.FromString(c) for c in (ours[0], theirs))
  ours_pb.session_start_info.start_time_secs = 0
  assert ours_pb == theirs_pb


_WITHOUT_TENSORFLOW = textwrap.dedent('''
    import sys
    sys.modules['tensorflow'] = None  # As if TensorFlow were not installed: importing it fails.
    from absl import logging
    logging.set_verbosity(logging.INFO)
    from lungjax import event_writer
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
  (path,) = glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  scalars = [(e['step'], tag, _scalar(t)) for e in _events(path) for tag, p, t, _ in e['values'] if p == 'scalars']
  assert scalars == [(4, 'train_loss', 1.5)]


_WITH_TENSORFLOW_INSTALLED = textwrap.dedent('''
    import sys
    from lungjax import event_writer
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
  (path,) = glob.glob(str(tmp_path / 'events.out.tfevents.*'))
  assert [(e['step'], tag) for e in _events(path) for tag, p, _, _ in e['values'] if p == 'scalars'] == [
      (1, 'train_loss')]


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
  (path,) = glob.glob(str(workdir / 'events.out.tfevents.*'))
  tags = {tag for e in _events(path) for tag, _, _, _ in e['values']}
  assert {'train_loss', 'val_loss', 'val_accuracy', '_hparams_/session_start_info'} <= tags
