"""Evaluation: predict a decoded folder, and restore a checkpoint to evaluate any folder (--mode=eval)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from lungjax import checkpoints, mesh as mesh_lib, metrics as metrics_lib, report, steps
from lungjax.data import images, loading, pipeline
from lungjax.models import create_model


def predict_probabilities(eval_step: Callable[..., jax.Array], state: steps.TrainState,
                          decoded: images.DecodedImages, batch_size: int, mesh: Mesh) -> np.ndarray:
  """Returns N x C probabilities, one row per image in order: padded rows are masked out."""
  dataset = pipeline.eval_dataset(decoded.images_NHWC, decoded.labels_N, global_batch_size=batch_size)
  sharding = mesh_lib.batch_sharded(mesh)
  outputs = []
  for batch in dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)):
    mask_B = batch.pop('mask')
    outputs.append((eval_step(state, mesh_lib.to_global_batch(batch, sharding)), mask_B))
  rows = [np.asarray(jax.device_get(probs_BC))[mask_B > 0] for probs_BC, mask_B in outputs]
  return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)


def evaluation_metrics(decoded: images.DecodedImages, probabilities_NC: np.ndarray,
                       classes: tuple[str, ...]) -> dict[str, Any]:
  """The classification metrics of a folder plus its unweighted cross-entropy."""
  metrics = metrics_lib.classification_metrics(decoded.labels_N, probabilities_NC, classes)
  metrics['loss'] = metrics_lib.mean_cross_entropy(decoded.labels_N, probabilities_NC)
  return metrics


def evaluate_and_report(eval_step: Callable[..., jax.Array], state: steps.TrainState, loaded: loading.FolderImages,
                        config: ml_collections.ConfigDict, mesh: Mesh, out_dir: str, title: str,
                        checkpoint_step: int) -> dict[str, Any]:
  """Predicts a loaded folder and writes metrics.json, report.md and confusion_matrix.png to out_dir."""
  probabilities_NC = predict_probabilities(eval_step, state, loaded.decoded, config.eval.batch_size, mesh)
  metrics = evaluation_metrics(loaded.decoded, probabilities_NC, tuple(config.data.classes))
  metrics.update(checkpoint_step=checkpoint_step, folder=os.path.abspath(loaded.folder),
                 skipped_images=[list(item) for item in loaded.skipped_report()])
  report.write_evaluation(metrics, out_dir, title)
  logging.info('%s: accuracy %.4f, macro recall %.4f, macro F1 %.4f → %s', title, metrics['accuracy'],
               metrics['macro_avg']['recall'], metrics['macro_avg']['f1'], out_dir)
  return metrics


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Restores workdir's best (or config.eval.step) checkpoint and evaluates config.eval.dir."""
  folder = config.eval.dir
  if not folder:
    raise ValueError('--mode=eval needs a folder of class sub-folders: pass --config.eval.dir=FOLDER')
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size(config.eval.batch_size, mesh, 'config.eval.batch_size')
  manager = checkpoints.create_manager(workdir, config.checkpoint, read_only=True)
  step = checkpoints.choose_step(manager, config.eval.step, workdir)
  model = create_model(config.model, len(config.data.classes))
  abstract = steps.abstract_train_state(model, steps.create_optimizer(config.train), config.data.image_size, mesh)
  state = checkpoints.restore_state(manager, step, abstract)
  manager.close()
  loaded = loading.load_folder(folder, config, require_all_classes=False)
  name = os.path.basename(os.path.normpath(folder))
  out_dir = os.path.join(workdir, 'eval', name)
  return evaluate_and_report(steps.jit_eval_step(model, mesh), state, loaded, config, mesh, out_dir,
                             f'{config.name} on {name}', step)
