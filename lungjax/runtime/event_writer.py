"""TensorBoard event files through tensorboardX, behind clu's writer interface (clu.metric_writers).

clu 0.0.12's `clu.metric_writers` package imports its TensorFlow SummaryWriter unconditionally
(clu/metric_writers/summary_writer.py → tf/summary_writer.py: `import tensorflow`), so without TensorFlow neither
`clu.metric_writers` nor `clu.periodic_actions` imports at all, and with it every training run pays TensorFlow's
import (8 s and about 0.5 GB of RSS on 2 cores). metric_writers() below imports them; unless the process has already
imported clu.metric_writers, it first registers EventFileWriter as that module's SummaryWriter, TensorFlow installed
or not, so clu's create_default_writer, LoggingWriter, AsyncMultiWriter and periodic_actions.ReportProgress work as
usual, event files are written by EventFileWriter, and a run never imports TensorFlow.

EventFileWriter is a thin clu MetricWriter over tensorboardX's SummaryWriter (protobufs, TFRecord framing and CRCs
are tensorboardX's): scalars as `simple_value` scalars, texts, images (a batch as one grid, as tensorboardX draws
it), histograms, and hparams as the hparams plugin's experiment and session_start_info in the run's own folder.
tensorboard (the [tensorboard] extra) is only needed to view the files.
"""

from __future__ import annotations

import glob
import importlib
import os
import sys
import threading
import types
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorboardX
from absl import logging
from tensorboardX import summary as tbx_summary

_CLU_SUMMARY_MODULE = 'clu.metric_writers.summary_writer'
_unique = iter(range(1 << 62))  # Tells apart the files of writers created in the same second by one process.


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


def _hparam(value: Any) -> bool | int | float | str:
  """A value the hparams plugin stores: numpy scalars as Python ones, anything else but numbers and bools as str."""
  value = value.item() if isinstance(value, np.generic) else value
  return value if isinstance(value, (bool, int, float, str)) else str(value)


def _uint8_NHWC(array: Any) -> np.ndarray:
  """An HxWxC image or NxHxWxC batch as uint8 NHWC: floats in [0, 1] scaled to 0..255, as tf.summary.image does."""
  batch = np.asarray(array)
  batch = batch[None] if batch.ndim == 3 else batch
  if batch.ndim != 4 or batch.shape[-1] not in (1, 3, 4):
    raise ValueError(f'write_images: an image must be HxWxC or NxHxWxC with C in (1, 3, 4), got {batch.shape}')
  if batch.dtype != np.uint8:
    batch = np.clip(np.round(batch.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
  return batch


class EventFileWriter:
  """A clu MetricWriter (registered as one by metric_writers()) writing a TensorBoard event file in `logdir` through
  tensorboardX.SummaryWriter.

  The file is a new one of this process (tensorboardX's name plus `.<pid>.<n>.v2`), so no file is written over.
  Calls are serialised under a lock (clu's AsyncMultiWriter calls from a worker thread); flush() pushes them to
  disk. Videos, audio and raw summaries are not written (a warning says so once), as clu's own writers do for what
  their back end lacks.
  """

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    self._lock = threading.Lock()
    suffix = f'.{os.getpid()}.{next(_unique)}.v2'
    self._writer: tensorboardX.SummaryWriter | None = tensorboardX.SummaryWriter(
        logdir=logdir, filename_suffix=suffix, flush_secs=30)
    (self.path,) = glob.glob(os.path.join(glob.escape(logdir), f'events.out.tfevents.*{suffix}'))

  def _open(self) -> tensorboardX.SummaryWriter:
    if self._writer is None:
      raise ValueError(f'{self.path}: the writer is closed')
    return self._writer

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    with self._lock:
      writer = self._open()
      for tag, value in scalars.items():
        writer.add_scalar(tag, float(np.asarray(value)), int(step))

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    with self._lock:
      writer = self._open()
      for tag, text in texts.items():
        writer.add_text(tag, text, int(step))

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    """Each HxWxC image or NxHxWxC batch (floats in [0, 1] or uint8) as one image (a batch as a grid)."""
    with self._lock:
      writer = self._open()
      for tag, array in images.items():
        writer.add_images(tag, _uint8_NHWC(array), int(step), dataformats='NHWC')

  def write_histograms(self, step: int, arrays: Mapping[str, Any],
                       num_buckets: Mapping[str, int] | None = None) -> None:
    with self._lock:
      writer = self._open()
      for tag, array in arrays.items():
        writer.add_histogram(tag, np.asarray(array, np.float64).ravel(), int(step),
                             bins=(num_buckets or {}).get(tag) or 30)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """The hparams plugin's experiment and session_start_info, in this run's own event file (tensorboardX's
    add_hparams would open a sub-run folder)."""
    flat = {name: _hparam(value) for name, value in _flatten(hparams).items()}
    experiment, start, _ = tbx_summary.hparams(flat, {})
    with self._lock:
      file_writer = self._open().file_writer
      file_writer.add_summary(experiment, 0)
      file_writer.add_summary(start, 0)

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
      if self._writer is not None:
        self._writer.flush()

  def close(self) -> None:
    with self._lock:
      if self._writer is not None:
        self._writer.close()
        self._writer = None


# --- clu without TensorFlow. ---

def metric_writers() -> types.ModuleType:
  """clu.metric_writers with EventFileWriter as its SummaryWriter, imported without TensorFlow (module docstring)."""
  if 'clu.metric_writers' not in sys.modules:
    stand_in = types.ModuleType(_CLU_SUMMARY_MODULE, 'lungjax.runtime.event_writer.EventFileWriter, as clu\'s SummaryWriter.')
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
