"""Restore a trained run for inference, and the Python API on it: `lungjax.load(workdir).predict(images)`.

load() is the one restore behind --mode=eval, explain and shortcuts, lungjax.tools.predict, lungjax.tools.compare and the API:
the run's own config.json builds the model, the best (or a chosen) checkpoint is read and every array is checked
against the sha256 the training run saved (checkpoints.restore), and a checkpoint whose fingerprint records
other classes, another model or image size than the config is refused.

Model.predict decodes each image exactly as --mode=eval decodes a folder's files (data/images.py load_image: 8-bit
RGB, EXIF rotation, DICOM through data/dicom.py, the run's config.data.preprocess through data/preprocess.py, as
training's images went, and a resize to the run's image size), runs them through the ONE prediction path of lungjax,
predict_batches: the Model's eval step (steps.jit_eval_step, jitted once per Model for its mesh: batch sharded over
the mesh's 'data' axis, state replicated), batch_size images at a time, the last batch zero-padded and the padding
masked away (one compile), and scales the probabilities by the run's served temperature (calibration.json).
--mode=eval (evaluate.py, TTA views and ensembles included), explain, shortcuts, compare, loso and predict all get
their probabilities from a Model this way.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any, Union

import flax.linen as nn
import grain
import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh
from PIL import Image

from lungjax import calibration, checkpoints, steps
from lungjax.runtime import distributed, mesh as mesh_lib, progress, workdir as workdir_lib
from lungjax.explain import gradcam
from lungjax.data import folders, images, pipeline, preprocess as preprocess_lib
from lungjax.models import create_model

# One image as Model.predict and Model.explain take it: a file path (JPEG, PNG or DICOM), a PIL image, or a uint8
# array H x W (grey) or H x W x 3 (RGB), of any size.
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


def read_image(path: str, size: int, preprocess: preprocess_lib.PreprocessSettings | None = None
               ) -> images.LoadedImage:
  """Decodes one file to size x size x 3 uint8 (and its warnings), through the run's preprocessing (None: none);
  BadImageError names it (also when missing or a folder)."""
  if os.path.isdir(path):
    raise images.BadImageError(path, 'a folder with no .jpg/.jpeg/.png images')
  if not os.path.lexists(path):
    raise images.BadImageError(path, 'no such file')
  if problem := folders.file_problem(path):  # A link loop, a dangling link, a FIFO (reading it would block), ...
    raise images.BadImageError(path, problem)
  try:
    return images.load_image(path, size, preprocess)
  except OSError as error:  # E.g. no permission to read it.
    raise images.BadImageError(path, str(error)) from error


def to_pixels(image: ImageInput, size: int, preprocess: preprocess_lib.PreprocessSettings | None = None
              ) -> np.ndarray:
  """One image as the model reads it: size x size x 3 uint8, decoded and resized as --mode=eval does a file.

  A path goes through read_image (images.load_image); a PIL image or an array through images.to_rgb_uint8 and the
  same bilinear resize (a grey image resized as one band or as three equal ones gives the same pixels). Both go
  through data/preprocess.py's preprocess_image with `preprocess` (the run's config.data.preprocess; None: off).
  """
  return pixels_and_size(image, size, preprocess)[0]


def pixels_and_size(image: ImageInput, size: int, preprocess: preprocess_lib.PreprocessSettings | None = None
                    ) -> tuple[np.ndarray, tuple[int, int]]:
  """(to_pixels of the image, its own (height, width))."""
  if isinstance(image, (str, os.PathLike)):
    loaded = read_image(os.fspath(image), size, preprocess)
    return loaded.pixels_HWC, loaded.size_HW
  if isinstance(image, np.ndarray):
    if image.dtype != np.uint8:
      raise TypeError(f'an image array must be uint8 (grey levels 0-255), not {image.dtype}')
    if image.ndim == 3 and image.shape[-1] == 1:
      image = image[..., 0]
    if image.ndim != 2 and not (image.ndim == 3 and image.shape[-1] == 3):
      raise ValueError(f'an image array must be H x W (grey) or H x W x 3 (RGB), not of shape {image.shape}')
    if min(image.shape[:2]) == 0:
      raise ValueError(f'an image array of shape {image.shape} has no pixels')
    image = Image.fromarray(np.ascontiguousarray(image))
  if not isinstance(image, Image.Image):
    raise TypeError(f'an image must be a file path, a PIL image or a uint8 numpy array, not {type(image).__name__}')
  if image.width == 0 or image.height == 0:
    raise ValueError(f'{describe(image)} has no pixels')
  try:
    pixels_HWC = images.to_rgb_uint8(image)
  except ValueError as error:  # E.g. images.AmbiguousFloatImageError: the message names the image.
    raise type(error)(f'{describe(image)}: {error}') from error
  resized_SSC = preprocess_lib.preprocess_image(Image.fromarray(pixels_HWC), preprocess or
                                                preprocess_lib.PreprocessSettings(), size)
  return resized_SSC, pixels_HWC.shape[:2]


def describe(image: Any) -> str:
  """How an error names one input image: a PIL image by its mode, size and file; an array by dtype and shape."""
  if isinstance(image, Image.Image):
    filename = getattr(image, 'filename', '')
    return (f'a PIL image (mode {image.mode}, {image.width}x{image.height}' +
            (f', from {filename!r})' if filename else ')'))
  if isinstance(image, np.ndarray):
    return f'a {image.dtype} array of shape {image.shape}'
  return repr(image)


def predict_batches(eval_step: Callable[..., jax.Array], state: steps.TrainState, images_NHWC: Any,
                    batch_size: int, mesh: Mesh, *, labels_N: np.ndarray | None = None,
                    desc: str = 'evaluating') -> np.ndarray:
  """N x C probabilities of N images (uint8 N x S x S x 3, or prepared images read per batch), one row per image
  in order: lungjax's one prediction path (Model.probabilities and evaluate.predict_probabilities both call it).

  eval_step: a Model's `eval_step` (steps.jit_eval_step for the mesh) or training's own. Batches of `batch_size`
  rows (a multiple of the mesh's 'data' axis) in file order come from pipeline.eval_dataset, the last padded and
  masked: every image is counted once and no padding row comes back. labels_N only rides along (None: zeros);
  `desc` labels the progress bar (empty: none).
  """
  n = len(images_NHWC)
  labels_N = np.zeros(n, np.int32) if labels_N is None else labels_N
  dataset = pipeline.eval_dataset(images_NHWC, labels_N, global_batch_size=batch_size)
  sharding = mesh_lib.batch_sharded(mesh)
  outputs = []
  batches = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
  total = -(-n // batch_size)
  for batch in progress.progress(batches, total, desc) if desc else batches:
    batch = mesh_lib.to_global_batch(batch, sharding)  # The mask too: gathered below in the rows' global order.
    mask_B = batch.pop('mask')
    outputs.append((eval_step(state, batch), mask_B))
  rows = [np.asarray(probs_BC)[mask_B > 0] for probs_BC, mask_B in distributed.fetch(outputs)]
  return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)


def padded_batch_size(batch_size: int, mesh: Mesh) -> int:
  """batch_size rounded up to a multiple of the mesh's 'data' axis (every device gets as many rows)."""
  if batch_size <= 0:
    raise ValueError(f'config.eval.batch_size={batch_size} must be positive')
  devices = int(mesh.shape['data'])
  return -(-batch_size // devices) * devices


def map_batches(fn: Callable[..., Any], variables: dict[str, Any], batch_size: int, *arrays_N: np.ndarray,
                desc: str = '') -> Any:
  """Applies fn(variables, *batch) over batches of `batch_size` rows (the last zero-padded: one compile); with
  `desc`, a progress bar (in a terminal) so labelled."""
  n = len(arrays_N[0])
  if n == 0:
    raise ValueError('map_batches needs at least one row')
  outputs = []
  starts = range(0, n, batch_size)
  for start in progress.progress(starts, len(starts), desc) if desc else starts:
    batch = [a[start:start + batch_size] for a in arrays_N]
    rows = len(batch[0])
    padded = [np.concatenate([b, np.zeros((batch_size - rows, *b.shape[1:]), b.dtype)]) for b in batch]
    outputs.append(jax.tree.map(lambda x, rows=rows: np.asarray(x)[:rows], fn(variables, *padded)))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)


def _as_list(images_in: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
  """One image (a path, a PIL image, an H x W or H x W x 3 array) as a list of one; an N x H x W x 3 array or a
  sequence as a list of its images."""
  if isinstance(images_in, (bytes, bytearray)):
    raise TypeError('images_in is bytes, which could be a path or a file\'s contents: pass a path as str '
                    '(os.fsdecode(path)), or the contents as PIL.Image.open(io.BytesIO(data))')
  if images_in is None:
    raise TypeError('images_in is None: pass a file path, a PIL image, a uint8 numpy array or a list of them')
  if isinstance(images_in, np.generic):
    raise TypeError(f'images_in is a numpy scalar ({images_in.dtype} {images_in!r}), not an image: pass a uint8 '
                    'array H x W or H x W x 3')
  if isinstance(images_in, (str, os.PathLike, Image.Image)):
    return [images_in]
  if isinstance(images_in, np.ndarray):
    if images_in.ndim < 2:
      raise ValueError(f'images_in is an array of shape {images_in.shape}: an image array is H x W or H x W x 3, '
                       'a batch N x H x W x 3')
    return list(images_in) if images_in.ndim == 4 else [images_in]
  try:
    listed = list(images_in)
  except TypeError as error:
    raise TypeError(f'an image must be a file path, a PIL image or a uint8 numpy array (or a list of them), not '
                    f'{type(images_in).__name__}') from error
  for index, image in enumerate(listed):
    if isinstance(image, (bytes, bytearray)) or image is None or isinstance(image, np.generic):
      raise TypeError(f'images_in[{index}] is {type(image).__name__}: an image must be a file path (str or '
                      'os.PathLike), a PIL image or a uint8 numpy array')
  return listed


class Model:
  """A trained run's checkpoint restored for inference (make one with lungjax.load).

  Attributes:
    config: the run's config (its config.json, plus any inference fields given to load), locked.
    module: the Flax module.
    state: the restored steps.TrainState, every array verified against the checkpoint's checksums.
    checkpoint_step: the training step of the restored checkpoint.
    workdir: the folder the run trained in.
    run_fingerprint: the run fingerprint the checkpoint was saved with (its 'run' fields: model, classes, the
      training and validation files' digests ...), None for a model not read from a checkpoint.
    mesh: the devices its batches are sharded over ('data' axis; default every local device, mesh.make_mesh()):
      `state` must be placed on it (replicated), as load() places it.
    eval_step: steps.jit_eval_step for `mesh`, built once (or the one given: training passes its own, so that the
      run compiles the step once): every probability of this Model comes from it.
  """

  def __init__(self, config: ml_collections.ConfigDict, module: nn.Module, state: steps.TrainState,
               checkpoint_step: int, workdir: str, run_fingerprint: dict[str, Any] | None = None,
               mesh: Mesh | None = None, eval_step: Callable[..., jax.Array] | None = None):
    self.run_fingerprint = run_fingerprint
    self.config = config
    self.module = module
    self.state = state
    self.checkpoint_step = int(checkpoint_step)
    self.workdir = workdir
    self.mesh = mesh if mesh is not None else mesh_lib.make_mesh()
    # The one jitted eval step of this Model (predict_batches pads every batch to one shape: one compile), the step
    # --mode=eval, explain, shortcuts, compare and predict all predict through.
    self.eval_step = eval_step if eval_step is not None else steps.jit_eval_step(module, self.mesh)
    self._explain_fns: dict[str, Callable[..., tuple[jax.Array, jax.Array]]] = {}

  def __repr__(self) -> str:
    return (f'lungjax.Model({self.workdir!r}, checkpoint_step={self.checkpoint_step}, '
            f'model={self.config.model.name!r}, classes={list(self.classes)})')

  @property
  def classes(self) -> tuple[str, ...]:
    """The class names, in the order of the probabilities' columns."""
    return tuple(self.config.data.classes)

  @property
  def image_size(self) -> int:
    """The side, in pixels, that every image is resized to."""
    return int(self.config.data.image_size)

  @functools.cached_property
  def preprocess(self) -> preprocess_lib.PreprocessSettings:
    """The run's preprocessing (config.data.preprocess), applied to every image as training applied it."""
    return preprocess_lib.settings_of(self.config)

  @property
  def batch_size(self) -> int:
    """How many images run through the model at a time: config.eval.batch_size, rounded up to a multiple of the
    mesh's devices (padded rows are masked away)."""
    return padded_batch_size(int(self.config.eval.batch_size), self.mesh)

  @property
  def variables(self) -> dict[str, Any]:
    """The module's variables: {'params': ..., **other collections (e.g. batch_stats)}."""
    return {'params': self.state.params, **self.state.model_state}

  @functools.cached_property
  def temperature(self) -> float:
    """The temperature predict scales probabilities by: the run's calibration.json, 1.0 where it has none or where
    it was fitted for another step than checkpoint_step (e.g. the best step was deleted: a warning says so)."""
    return calibration.served_temperature(self.workdir, self.checkpoint_step)

  def class_index(self, class_name: str) -> int:
    """The column of `class_name`; ValueError naming the model's classes when it is not one of them."""
    if class_name not in self.classes:
      raise ValueError(f'class_name={class_name!r} is not one of the model\'s classes {list(self.classes)}')
    return self.classes.index(class_name)

  def pixels(self, images_in: ImageInput | Sequence[ImageInput]) -> np.ndarray:
    """The images as the model reads them: N x S x S x 3 uint8 (files decoded in parallel, to_pixels)."""
    listed = _as_list(images_in)
    threads = min(len(listed), self.config.data.decode_threads or os.cpu_count() or 1) or 1
    def one(indexed: tuple[int, ImageInput]) -> np.ndarray:
      index, image = indexed
      try:
        return to_pixels(image, self.image_size, self.preprocess)
      except images.BadImageError:
        raise  # Names its file.
      except (ValueError, TypeError) as error:
        raise type(error)(f'images_in[{index}]: {error}' if len(listed) > 1 else str(error)) from error

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      decoded = list(pool.map(one, enumerate(listed)))
    if not decoded:
      return np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
    return np.stack(decoded)

  def probabilities(self, images_NHWC: np.ndarray, *, desc: str = '', batch_size: int | None = None
                    ) -> np.ndarray:
    """The model's softmax (uncalibrated) of N x S x S x 3 uint8 pixels (or prepared images): N x C float32, through
    predict_batches and this Model's eval_step, the numbers --mode=eval has. batch_size: rows per batch (None:
    `batch_size`; another is rounded up to a multiple of the mesh's devices too)."""
    if not len(images_NHWC):
      return np.zeros((0, len(self.classes)), np.float32)
    rows = self.batch_size if batch_size is None else padded_batch_size(int(batch_size), self.mesh)
    return predict_batches(self.eval_step, self.state, images_NHWC, rows, self.mesh, desc=desc)

  def predict(self, images_in: ImageInput | Sequence[ImageInput], *, calibrated: bool = True) -> np.ndarray:
    """Class probabilities, N x C (columns in `classes` order, rows in the images' order), float64.

    images_in: file paths (JPEG, PNG, DICOM), PIL images, uint8 arrays H x W or H x W x 3 of any size, or one of
    them alone, or an N x H x W x 3 uint8 array. A float (mode F) PIL image is read on Pillow's 0..255 scale (what
    convert('F') makes of an 8-bit image); one with NaN/inf, values outside 0..255, or all values in 0..1 is
    refused (images.float_range), as is an image with no pixels: the error names the input (images_in[i]). Scaled by the run's served temperature (`temperature`), unless
    calibrated=False: then the model's own softmax, the numbers --mode=eval writes to predictions.csv.
    A file that cannot be read raises images.BadImageError naming it.
    """
    raw_NC = self.probabilities(self.pixels(images_in))
    if not calibrated:
      return raw_NC.astype(np.float64)
    return calibration.scale_probabilities(raw_NC, self.temperature)

  def explain_pixels(self, images_NHWC: np.ndarray, class_indices_N: np.ndarray, *, layer: str = '',
                     desc: str = '') -> tuple[np.ndarray, np.ndarray]:
    """(probabilities_NC, heatmaps_NHW): the softmax (from `probabilities`: this Model's one eval step, the numbers
    --mode=eval has) and the Grad-CAM of `layer` (default config.explain.layer) of N x S x S x 3 uint8 pixels, each
    map for its class index (below 0: the predicted class), in [0, 1]."""
    images_NHWC = np.asarray(images_NHWC)
    return self.probabilities(images_NHWC), self.heatmaps(images_NHWC, class_indices_N, layer=layer, desc=desc)

  def heatmaps(self, images_NHWC: np.ndarray, class_indices_N: np.ndarray, *, layer: str = '',
               desc: str = '') -> np.ndarray:
    """N x S x S float32 in [0, 1]: the Grad-CAM of `layer` (default config.explain.layer) of N x S x S x 3 uint8
    pixels, each map for its class index (below 0: the predicted class); batch_size images at a time (map_batches:
    the last zero-padded, one compile per layer)."""
    layer = layer or self.config.explain.layer
    if layer not in self._explain_fns:
      self._explain_fns[layer] = gradcam.jit_explain(self.module, layer)
    _, heatmaps_NHW = map_batches(self._explain_fns[layer], self.variables, self.batch_size, np.asarray(images_NHWC),
                                  np.asarray(class_indices_N, np.int32), desc=desc)
    return heatmaps_NHW

  def explain(self, image: ImageInput, class_name: str | None = None, *, layer: str = '') -> np.ndarray:
    """The Grad-CAM heat map of one image, H x W float32 in [0, 1] at the image's own height and width (the map
    the model drew on its S x S input, resized bilinearly: lay it over the image as it is).

    It shows where `class_name` (default: the predicted class) drew its logit from, through `layer` (a module path
    or a name unique among the modules; default config.explain.layer). A class_name that is not one of `classes`
    raises ValueError naming them.
    """
    target = -1 if class_name is None else self.class_index(class_name)
    if isinstance(image, (list, tuple)) or (isinstance(image, np.ndarray) and image.ndim == 4):
      raise ValueError(f'explain takes one image, not {len(image)}')
    pixels_HWC, (height, width) = pixels_and_size(image, self.image_size, self.preprocess)
    heatmaps_NHW = self.heatmaps(pixels_HWC[None], np.full(1, target, np.int32), layer=layer)
    heatmap_SS = np.asarray(heatmaps_NHW[0], np.float32)
    if (height, width) == heatmap_SS.shape:
      return heatmap_SS
    resized = Image.fromarray(heatmap_SS, mode='F').resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, np.float32), 0.0, 1.0)


def load(workdir: str | os.PathLike, step: int | None = None, *, config: ml_collections.ConfigDict | None = None,
         mesh: Mesh | None = None) -> Model:
  """Restores a trained run's checkpoint for inference: lungjax's one inference restore.

  Args:
    workdir: a folder lungjax trained in (its config.json and checkpoints/).
    step: the checkpoint step to restore; None: config.eval.step, which a run saves as -1: the best checkpoint by
      the validation metric (config.checkpoint.best_metric), else the latest.
    config: the config to rebuild the model with, from checkpoints.run_config_for_inference (which refuses one
      that differs from config.json in more than checkpoints.INFERENCE_FIELDS); None: workdir's config.json.
    mesh: where the state is placed (replicated); None: every local device (mesh.make_mesh()).

  Every array is checked against the sha256 the training run saved. Raises FileNotFoundError when workdir has no
  config.json or no checkpoint, ValueError naming the saved steps when `step` has none,
  checkpoints.CorruptCheckpointError naming a step that does not verify (unless
  config.checkpoint.fallback_to_good_step: then the newest good step, with a warning), and
  fingerprint.FingerprintMismatchError naming the field when the checkpoint records other classes, another model
  or image size than config.
  """
  workdir = os.fspath(workdir)
  # The run's final outputs (summary.json, calibration.json: the served temperature) as one unit: a training killed
  # while writing them left a temperature that may be another checkpoint's (issue 26 High 3).
  problems = workdir_lib.unit_problems(workdir) or []
  for problem in [p for p in problems if p.endswith(' is missing')]:  # Deleted by hand after the run: as if never
    logging.warning('%s: %s since the run finished (deleted by hand?): served without it', workdir, problem)
    problems.remove(problem)  # written (no calibration.json: temperature 1.0).
  if problems:
    raise workdir_lib.IncompleteFolderError(
        f'{workdir}: the run\'s final outputs (summary.json, calibration.json) are incomplete: ' + '; '.join(problems) +
        '. Rerun its training command: it resumes from the last checkpoint and writes them again')
  config = config if config is not None else checkpoints.run_config_for_inference(workdir)
  requested = config.eval.step if step is None else int(step)
  mesh = mesh if mesh is not None else mesh_lib.make_mesh()
  module = create_model(config.model, len(config.data.classes))
  abstract = steps.abstract_train_state(module, steps.create_optimizer(config.train), config.data.image_size, mesh)
  manager = checkpoints.create_manager(workdir, config.checkpoint, read_only=True)
  try:
    restored = checkpoints.restore(manager, 'best' if requested < 0 else requested, abstract, workdir=workdir,
                                   fallback=config.checkpoint.fallback_to_good_step, config=config)
  finally:
    manager.close()
  return Model(config, module, restored.state, restored.step, workdir, restored.fingerprint, mesh=mesh)
