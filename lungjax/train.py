"""train_and_evaluate(config, workdir): one training run, from data and a fresh or resumed state to its reports."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from lungjax import autoencoder, checkpoints, evaluate, final_evaluation, fit as fit_lib, steps
from lungjax.data import augment, loading, pipeline, sources as sources_lib, splits
from lungjax.runtime import distributed, fingerprint as fingerprint_lib, mesh as mesh_lib, preemption
from lungjax.models import create_model, warm_start
from lungjax.runtime import event_writer, run_fields, workdir as workdir_lib
from lungjax.cpu import host_memory


def _flatten(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  """Flattens a nested config dict to {'a.b': value} (sequences as strings) for the hparams writer."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value if isinstance(value, (bool, int, float, str)) else str(value)
  return flat


def class_weights(labels_N: np.ndarray, config: ml_collections.ConfigDict) -> np.ndarray:
  """The loss weight of each class: balanced over the training labels, or all ones."""
  num_classes = len(config.data.classes)
  if config.train.class_weighting == 'none':
    return np.ones(num_classes, np.float32)
  return splits.balanced_class_weights(labels_N, num_classes)


def _example_weights(config: ml_collections.ConfigDict, train: Any, weights_C: np.ndarray) -> np.ndarray | None:
  """Per-image loss weights with config.train.source_weighting (logged per source and class), or None."""
  if config.train.source_weighting == 'none':
    return None
  classes = tuple(config.data.classes)
  sources_N, source_names = sources_lib.source_indices(train)
  weights_N = splits.example_weights(train.labels_N, sources_N, weights_C, config.train.source_weighting)
  logging.info('source weighting %s: mean weight per (source, class): %s', config.train.source_weighting, {
      f'{name}/{c}': round(float(weights_N[(sources_N == s) & (train.labels_N == k)].mean()), 4)
      for s, name in enumerate(source_names) for k, c in enumerate(classes)
      if np.any((sources_N == s) & (train.labels_N == k))})
  return weights_N


def _write_run_files(config: ml_collections.ConfigDict, workdir: str, data: loading.TrainingData) -> None:
  """config.json (what eval, explain and predict rebuild the model from) and the training images' thumbnails (what
  eval looks for copies of training images in); process 0 only."""
  if distributed.is_main_process():
    workdir_lib.write_text(os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))
    loading.save_training_thumbnails(loading.TrainingThumbnails.of(data.train_folder),
                                     loading.training_thumbnails_path(workdir))


def _validation_row(eval_step: Callable[..., jax.Array], state: steps.TrainState, data: loading.TrainingData,
                    config: ml_collections.ConfigDict, mesh: Mesh) -> dict[str, float]:
  """The epoch's validation loss, accuracy and macro averages as val_* columns ({} without a validation split)."""
  if not len(data.val):
    return {}
  probabilities_NC = evaluate.predict_probabilities(eval_step, state, data.val, config.eval.batch_size, mesh)
  val = evaluate.evaluation_metrics(data.val.labels_N, probabilities_NC, tuple(config.data.classes))
  row = {f'val_{k}': v for k, v in (('loss', val['loss']), ('accuracy', val['accuracy']))}
  row.update({f'val_macro_{k}': v for k, v in val['macro_avg'].items()})
  row.update(_per_source_recall(data.val, probabilities_NC, tuple(config.data.classes), val['macro_avg']['recall']))
  return row


def _per_source_recall(val: Any, probabilities_NC: np.ndarray, classes: tuple[str, ...],
                       pooled_recall: float) -> dict[str, float]:
  """Each source's macro recall (over the classes it has) as val_macro_recall/<source>, and the lowest of them as
  val_worst_source_macro_recall (checkpoint.best_metric may rank by it); with one source the latter is the whole's."""
  sources_N, names = sources_lib.source_indices(val)
  if len(names) < 2:
    return {'val_worst_source_macro_recall': pooled_recall}
  labels_N, row = np.asarray(val.labels_N), {}
  for s, name in enumerate(names):
    if np.any(rows := sources_N == s):
      metrics = evaluate.evaluation_metrics(labels_N[rows], probabilities_NC[rows], classes)
      row[f'val_macro_recall/{name}'] = metrics['macro_avg']['recall']
  row['val_worst_source_macro_recall'] = min(row.values())
  return row


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       data: loading.TrainingData | None = None) -> final_evaluation.RunSummary:
  """Trains config's model on data.root/train, validating each epoch; resumes from workdir's checkpoints.

  The config is assumed valid (config_check.validate; main runs it). `data` (already decoded and split, e.g. one
  cross-validation fold) skips loading. With config.autoencoder.enabled a fresh run first pretrains the conv stack
  (autoencoder.pretrain, stage 1). Ends by evaluating the best checkpoint on validation (and test/, if present) and
  drawing the curves (final_evaluation). Returns the summary also written to workdir/summary.json, with the best
  checkpoint's validation predictions as its `.validation`. On SIGTERM or SIGINT (Ctrl-C) it saves the current step
  and raises preemption.Preempted. The run holds workdir's lock throughout, and refuses a non-empty folder that is
  not a lungjax run (lungjax/runtime/workdir.py).
  """
  config = run_fields.with_defaults(config)  # A field an older config lacks reads its packaged default.
  with workdir_lib.owned(workdir), preemption.StopRequest() as stop:
    os.makedirs(workdir, exist_ok=True)
    classes = tuple(config.data.classes)
    mesh = mesh_lib.make_mesh()
    mesh_lib.check_batch_size(config.train.batch_size, mesh, 'config.train.batch_size')
    mesh_lib.check_batch_size(config.eval.batch_size, mesh, 'config.eval.batch_size')

    # Data: decoded once, split by copy groups; batches come from a grain pipeline whose state is checkpointed.
    data = data or loading.load_training_data(config)
    host_memory.release_free_memory()  # The decoders' full-size scratch goes back to the system before training.
    weights_C = class_weights(data.train.labels_N, config)
    logging.info('class weights: %s%s', dict(zip(classes, np.round(weights_C, 4).tolist())),
                 ' (not used: source_weighting within_source weighs each image, below)'
                 if config.train.source_weighting == 'within_source' else '')
    weights_N = _example_weights(config, data.train, weights_C)
    steps_per_epoch = len(data.train) // config.train.batch_size
    num_steps = steps_per_epoch * config.train.num_epochs
    dataset = pipeline.train_dataset(data.train.images_NHWC, data.train.labels_N,
                                     global_batch_size=config.train.batch_size,
                                     num_epochs=config.train.num_epochs, seed=config.seed, weights_N=weights_N,
                                     host_augment=augment.host_augment_fn(config.augment))
    read_options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
    data_iter = iter(dataset.to_iter_dataset(read_options))

    # State: resumed from the newest good checkpoint of this same run, else fresh (and maybe warm-started).
    model = create_model(config.model, len(classes))
    tx = steps.create_optimizer(config.train, num_steps)
    manager = checkpoints.create_manager(workdir, config.checkpoint)
    history: list[dict[str, float]] = []
    abstract = steps.abstract_train_state(model, tx, config.data.image_size, mesh)
    run_fingerprint = fingerprint_lib.run_fingerprint(config, data, abstract, read_options.num_threads)
    resumed = checkpoints.restore(manager, 'resume', abstract, workdir=workdir, data_iter=data_iter,
                                  checkpoint_config=config.checkpoint, fingerprint=run_fingerprint)
    manager, restored = resumed.manager, resumed.restored
    if restored is not None:
      state, history = restored.state, list(restored.history['epochs'])
      logging.info('resumed from %s at step %d', checkpoints.checkpoint_dir(workdir), restored.step)
    else:
      state = steps.jit_create_train_state(model, tx, config.data.image_size, mesh)(jax.random.PRNGKey(config.seed))
      encoder = None
      if autoencoder.enabled(config):  # Stage 1: the conv stack pretrained on reconstruction (resumed or reused).
        encoder = autoencoder.pretrain(config, workdir, data, stop)
      state = warm_start.warm_start(config, workdir, state, tx, encoder)
    _write_run_files(config, workdir, data)  # Only now that every check of a resume has passed.
    # clu's writers; TensorBoard event files by tensorboardX, never importing TensorFlow (lungjax/runtime/event_writer.py).
    writer = event_writer.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    writer.write_hparams(_flatten(config.to_dict()))
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    logging.info('model %s: %d parameters; %d steps (%d epochs x %d)', config.model.name, n_params, num_steps,
                 config.train.num_epochs, steps_per_epoch)

    # Steps: the jitted, sharded train step (loss in steps.py) and eval step.
    frozen_mask, freeze_steps = warm_start.frozen_parameters(config, state.params, steps_per_epoch)
    options = steps.compiler_options(config.train.cpu_compiler_options)
    train_step = steps.jit_train_step(model, tx, weights_C, mesh, augment_fn=augment.make_augment_fn(config.augment),
                                      frozen_mask=frozen_mask, freeze_steps=freeze_steps, compiler_options=options)
    eval_step = steps.jit_eval_step(model, mesh, compiler_options=options)
    report_progress = event_writer.periodic_actions().ReportProgress(num_train_steps=num_steps, writer=writer)
    first_step = int(state.step)
    start_time = time.perf_counter()

    def end_epoch(state: steps.TrainState, step: int, train_row: dict[str, float]) -> dict[str, float] | None:
      row = {'epoch': step // steps_per_epoch, 'step': step, **train_row}
      row.update(_validation_row(eval_step, state, data, config, mesh))
      metrics = {k: v for k, v in row.items() if k.startswith('val_')} or None
      row['wall_s'] = round(time.perf_counter() - start_time, 2)
      history.append(row)
      writer.write_scalars(step, {k: v for k, v in row.items() if k.startswith(('train_', 'val_'))})
      logging.info('epoch %d: %s', row['epoch'], ', '.join(
          f'{k} {v:.4f}' for k, v in row.items() if k.startswith(('train_', 'val_'))))
      return metrics

    def save(state: steps.TrainState, metrics: dict[str, float] | None) -> None:
      checkpoints.save(manager, state, data_iter, history, metrics, run_fingerprint)

    # The loop (lungjax/fit.py): log points, NaN check, epoch ends, checkpoints, and SIGTERM / Ctrl-C each step.
    state = fit_lib.fit(state, data_iter, manager, stop, train_step=train_step,
                        batch_sharding=mesh_lib.batch_sharded(mesh), num_steps=num_steps,
                        steps_per_epoch=steps_per_epoch, save=save, end_epoch=end_epoch,
                        log_every_steps=config.train.log_every_steps, writer=writer, report_progress=report_progress)
    distributed.check_replicas_equal(state, 'train state')  # Multi-host: every process ends with the same state.
    writer.flush()
    train_seconds = time.perf_counter() - start_time

    # Reports: the best checkpoint (by config.checkpoint.best_metric on validation; else the latest) evaluated.
    best_step = checkpoints.best_or_latest(manager, ranked=bool(len(data.val)))
    best_state = checkpoints.restore(manager, best_step, abstract, workdir=workdir).state
    manager.close()
    summary: dict[str, Any] = {
        'config': config.name, 'model': config.model.name, 'n_params': n_params, 'best_step': best_step,
        'best_metric': config.checkpoint.best_metric, 'num_steps': num_steps, 'steps_per_epoch': steps_per_epoch,
        'n_train': len(data.train), 'n_val': len(data.val), 'class_weights': dict(zip(classes, weights_C.tolist())),
        'source_weighting': config.train.source_weighting,
        'train_seconds_this_run': round(train_seconds, 2), 'first_step_this_run': first_step,
        'skipped_images': [list(item) for item in data.train_folder.skipped_report()],
        'devices': [str(d) for d in jax.devices()], 'history': history}
    if data.grouping is not None:  # What the split kept on one side (copies, and config.data.group_by's groups).
      summary['grouping'] = data.grouping.record()
    return final_evaluation.report_best_checkpoint(config, workdir, summary, eval_step, best_state, best_step, mesh,
                                                   data, run_fingerprint)
