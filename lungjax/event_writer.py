"""TensorBoard event files without TensorFlow, behind clu's writer interface (clu.metric_writers).

clu 0.0.12's `clu.metric_writers` package imports its TensorFlow SummaryWriter unconditionally
(clu/metric_writers/summary_writer.py → tf/summary_writer.py: `import tensorflow`), so without TensorFlow neither
`clu.metric_writers` nor `clu.periodic_actions` imports at all, and with it every training run pays TensorFlow's
import (8 s and about 0.5 GB of RSS on 2 cores). metric_writers() below imports them; unless the process has already
imported clu.metric_writers, it first registers EventFileWriter as that module's SummaryWriter, TensorFlow installed
or not, so clu's create_default_writer, LoggingWriter, AsyncMultiWriter and periodic_actions.ReportProgress work as
usual, event files are written by EventFileWriter, and a run never imports TensorFlow.

EventFileWriter writes what TensorFlow's summary writer writes for the same calls: an events.out.tfevents.* file of
TFRecord-framed Event protobufs (length, masked CRC-32C of the length, the bytes, masked CRC-32C of the bytes), with
scalars, texts, images and histograms as TF2 tensor summaries of their TensorBoard plugin and hparams as the hparams
plugin's session_start_info. The few protobuf messages are encoded here by hand (field numbers from tensorboard's
event.proto, summary.proto, tensor.proto and hparams/plugin_data.proto), so neither TensorFlow nor tensorboard is
needed to write; tensorboard (the [tensorboard] extra) is only needed to view them.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import socket
import struct
import sys
import threading
import time
import types
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import logging

_CLU_SUMMARY_MODULE = 'clu.metric_writers.summary_writer'
_FILE_VERSION = 'brain.Event:2'
_PLUGIN_DATA_VERSION = 0  # tensorboard.plugins.hparams.metadata.PLUGIN_DATA_VERSION.
_HPARAMS_TAG = '_hparams_/session_start_info'
# tensorflow/core/framework/types.proto's DataType and summary.proto's DataClass values.
DT_FLOAT, DT_DOUBLE, DT_STRING = 1, 2, 7
DATA_CLASS_SCALAR, DATA_CLASS_TENSOR, DATA_CLASS_BLOB_SEQUENCE = 1, 2, 3
_unique = iter(range(1 << 62))  # Tells apart the files of writers created in the same second.


# --- Protocol buffer wire format: just what Event and its parts need. ---

def _varint(value: int) -> bytes:
  value &= (1 << 64) - 1  # Negative int64s take ten bytes, as protobuf writes them.
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint(field << 3 | wire_type)


def _int_field(field: int, value: int) -> bytes:
  return _key(field, 0) + _varint(value)


def _double_field(field: int, value: float) -> bytes:
  return _key(field, 1) + struct.pack('<d', value)


def _bytes_field(field: int, value: bytes | str) -> bytes:
  data = value.encode('utf-8') if isinstance(value, str) else value
  return _key(field, 2) + _varint(len(data)) + data


def _tensor(dtype: int, shape: tuple[int, ...], *, content: bytes = b'', strings: tuple[bytes, ...] = ()) -> bytes:
  """A TensorProto: dtype=1, tensor_shape=2 (dim=2 {size=1}), tensor_content=4, string_val=8."""
  shape_proto = b''.join(_bytes_field(2, _int_field(1, size)) for size in shape)
  return (_int_field(1, dtype) + _bytes_field(2, shape_proto) + (_bytes_field(4, content) if content else b'') +
          b''.join(_bytes_field(8, s) for s in strings))


def _summary_value(tag: str, plugin_name: str, data_class: int, tensor: bytes, plugin_content: bytes = b'') -> bytes:
  """A Summary.Value: tag=1, tensor=8, metadata=9 (SummaryMetadata: plugin_data=1 {plugin_name=1, content=2},
  data_class=4)."""
  plugin_data = _bytes_field(1, plugin_name) + (_bytes_field(2, plugin_content) if plugin_content else b'')
  metadata = _bytes_field(1, plugin_data) + _int_field(4, data_class)
  return _bytes_field(1, tag) + _bytes_field(8, tensor) + _bytes_field(9, metadata)


def _event(wall_time: float, step: int | None = None, *, summary_values: tuple[bytes, ...] = (),
           file_version: str = '') -> bytes:
  """An Event: wall_time=1, step=2, file_version=3, summary=5 (Summary: value=1, repeated)."""
  out = _double_field(1, wall_time) + (_int_field(2, step) if step is not None else b'')
  if file_version:
    out += _bytes_field(3, file_version)
  if summary_values:
    out += _bytes_field(5, b''.join(_bytes_field(1, value) for value in summary_values))
  return out


# --- TFRecord framing. ---

def _crc32c_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli's polynomial, reflected.
    table.append(crc)
  return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of `data`, as TFRecord files use it."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC: rotated right by 15 bits plus 0xa282ead8, so that CRCs of CRCs are not trivial."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
  """One TFRecord: uint64 length, masked CRC of the length, the data, masked CRC of the data (little-endian)."""
  length = struct.pack('<Q', len(data))
  return length + struct.pack('<I', masked_crc32c(length)) + data + struct.pack('<I', masked_crc32c(data))


def read_tfrecords(path: str) -> list[bytes]:
  """The records of a TFRecord file; raises ValueError naming the file at a bad length, CRC or a cut record."""
  records = []
  with open(path, 'rb') as f:
    while header := f.read(12):
      if len(header) < 12 or struct.unpack('<I', header[8:])[0] != masked_crc32c(header[:8]):
        raise ValueError(f'{path}: bad record header at byte {f.tell() - len(header)}')
      data = f.read(struct.unpack('<Q', header[:8])[0])
      footer = f.read(4)
      if len(footer) < 4 or struct.unpack('<I', footer)[0] != masked_crc32c(data):
        raise ValueError(f'{path}: record at byte {f.tell() - len(data) - len(footer) - 12} is cut or corrupt')
      records.append(data)
  return records


# --- The writer. ---

def _hparam_value(value: Any) -> bytes:
  """A google.protobuf.Value as the hparams plugin stores it: number_value=2, string_value=3, bool_value=4."""
  if isinstance(value, (bool, np.bool_)):
    return _int_field(4, int(value))
  if isinstance(value, (int, float, np.integer, np.floating)):
    return _double_field(2, float(value))
  return _bytes_field(3, '' if value is None else str(value))


def _flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'a.b': value}, as clu's flatten_dict does for hparams: sequences by index ('a.0'), None as ''."""
  flat: dict[str, Any] = {}
  for key, value in tree.items():
    if isinstance(value, Mapping) or hasattr(value, 'items'):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    elif isinstance(value, (list, tuple)):
      flat.update(_flatten({str(i): v for i, v in enumerate(value)}, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = '' if value is None else value
  return flat


def _png(image_HWC: np.ndarray) -> bytes:
  """PNG bytes of an HxWxC (C = 1, 3 or 4) image: floats in [0, 1] are scaled to 0..255, as tf.summary.image does."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  image = np.asarray(image_HWC)
  if image.dtype != np.uint8:
    image = np.clip(np.round(image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format='PNG')
  return buffer.getvalue()


class EventFileWriter:
  """A clu MetricWriter (registered as one by metric_writers()) that writes a TensorBoard event file in `logdir`.

  Writes append to an open file under a lock (clu's AsyncMultiWriter calls from a worker thread); flush() pushes
  them to disk. Videos, audio and raw summaries are not written (a warning says so once), as clu's own writers do
  for what their back end lacks.
  """

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{next(_unique)}.v2'
    self.path = os.path.join(logdir, name)
    self._lock = threading.Lock()
    self._file: io.BufferedWriter | None = open(self.path, 'wb')  # pylint: disable=consider-using-with
    self._append(_event(time.time(), 0, file_version=_FILE_VERSION))
    self.flush()

  def _append(self, event: bytes) -> None:
    with self._lock:
      if self._file is None:
        raise ValueError(f'{self.path}: the writer is closed')
      self._file.write(tfrecord(event))

  def _write(self, step: int, values: list[bytes]) -> None:
    if values:
      self._append(_event(time.time(), int(step), summary_values=tuple(values)))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Each scalar as tf.summary.scalar writes it: a float32 tensor of shape () for the 'scalars' plugin."""
    self._write(step, [_summary_value(tag, 'scalars', DATA_CLASS_SCALAR,
                                      _tensor(DT_FLOAT, (), content=np.float32(value).tobytes()))
                       for tag, value in scalars.items()])

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    """Each text as tf.summary.text writes it: a string tensor of shape () for the 'text' plugin."""
    self._write(step, [_summary_value(tag, 'text', DATA_CLASS_TENSOR, _tensor(DT_STRING, (), strings=(
        text.encode('utf-8'),))) for tag, text in texts.items()])

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    """Each HxWxC image or NxHxWxC batch as tf.summary.image writes it: [width, height, PNG, ...] strings."""
    values = []
    for tag, array in images.items():
      batch = np.asarray(array)
      batch = batch[None] if batch.ndim == 3 else batch
      strings = (str(batch.shape[2]).encode(), str(batch.shape[1]).encode(), *(_png(image) for image in batch))
      values.append(_summary_value(tag, 'images', DATA_CLASS_BLOB_SEQUENCE,
                                   _tensor(DT_STRING, (len(strings),), strings=strings)))
    self._write(step, values)

  def write_histograms(self, step: int, arrays: Mapping[str, Any],
                       num_buckets: Mapping[str, int] | None = None) -> None:
    """Each array as tf.summary.histogram writes it: a [buckets, 3] float64 tensor of (left, right, count)."""
    values = []
    for tag, array in arrays.items():
      data = np.asarray(array, np.float64).ravel()
      buckets = (num_buckets or {}).get(tag) or 30
      if data.size == 0:
        rows = np.zeros((0, 3))
      elif data.min() == data.max():
        rows = np.array([[data.min(), data.max(), float(data.size)]])
      else:
        counts, edges = np.histogram(data, bins=buckets)
        rows = np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)
      values.append(_summary_value(tag, 'histograms', DATA_CLASS_TENSOR,
                                   _tensor(DT_DOUBLE, rows.shape, content=rows.astype('<f8').tobytes())))
    self._write(step, values)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """The hparams plugin's session_start_info, as tensorboard.plugins.hparams.api.hparams writes it."""
    flat = _flatten(hparams)
    flat = {k: v.item() if isinstance(v, np.generic) else v for k, v in flat.items()}
    flat = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()}
    group = hashlib.sha256(json.dumps(flat, sort_keys=True, separators=(',', ':')).encode('utf-8')).hexdigest()
    # SessionStartInfo: hparams=1 (map entries: key=1, value=2), group_name=4, start_time_secs=5.
    start = b''.join(_bytes_field(1, _bytes_field(1, name) + _bytes_field(2, _hparam_value(flat[name])))
                     for name in sorted(flat))
    start += _bytes_field(4, group) + _double_field(5, time.time())
    content = _int_field(1, _PLUGIN_DATA_VERSION) + _bytes_field(3, start)  # HParamsPluginData: version=1, =3.
    empty = _tensor(DT_FLOAT, (0,))
    self._write(0, [_summary_value(_HPARAMS_TAG, 'hparams', DATA_CLASS_TENSOR, empty, plugin_content=content)])

  def write_videos(self, step: int, videos: Mapping[str, Any]) -> None:
    del step, videos
    logging.log_first_n(logging.WARNING, 'lungjax EventFileWriter does not write videos.', 1)

  def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int) -> None:
    del step, audios, sample_rate
    logging.log_first_n(logging.WARNING, 'lungjax EventFileWriter does not write audio.', 1)

  def write_summaries(self, step: int, values: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> None:
    del step, values, metadata
    logging.log_first_n(logging.WARNING, 'lungjax EventFileWriter does not write raw summaries.', 1)

  def flush(self) -> None:
    with self._lock:
      if self._file is not None:
        self._file.flush()

  def close(self) -> None:
    with self._lock:
      if self._file is not None:
        self._file.close()
        self._file = None


# --- clu without TensorFlow. ---

def metric_writers() -> types.ModuleType:
  """clu.metric_writers with EventFileWriter as its SummaryWriter, imported without TensorFlow (module docstring)."""
  if 'clu.metric_writers' not in sys.modules:
    stand_in = types.ModuleType(_CLU_SUMMARY_MODULE, 'lungjax.event_writer.EventFileWriter, as clu\'s SummaryWriter.')
    stand_in.SummaryWriter = EventFileWriter
    sys.modules.setdefault(_CLU_SUMMARY_MODULE, stand_in)
  module = importlib.import_module('clu.metric_writers')
  if module.SummaryWriter is EventFileWriter:
    module.MetricWriter.register(EventFileWriter)
  return module


def periodic_actions() -> types.ModuleType:
  """clu.periodic_actions (ReportProgress, ...), importable without TensorFlow like metric_writers()."""
  metric_writers()
  return importlib.import_module('clu.periodic_actions')


def create_default_writer(logdir: str, *, just_logging: bool = False, asynchronous: bool = True) -> Any:
  """clu.metric_writers.create_default_writer: log lines, plus event files in `logdir` unless just_logging."""
  return metric_writers().create_default_writer(logdir, just_logging=just_logging, asynchronous=asynchronous)
