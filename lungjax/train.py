"""train_and_evaluate(config, workdir): the training loop, validation each epoch, checkpoints, final reports."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
from absl import logging

from lungjax import augment, checkpoints, evaluate, mesh as mesh_lib, report, steps, warm_start
from lungjax import calibration as calibration_lib, distributed, host_memory
from lungjax import fingerprint as fingerprint_lib, model_card, preemption, progress
from lungjax import event_writer, workdir as workdir_lib
from lungjax.data import loading, pipeline, sources as sources_lib, splits
from lungjax.models import create_model


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field for values that cannot work."""
  classes = tuple(config.data.classes)
  if len(classes) < 2 or len(set(classes)) != len(classes):
    raise ValueError(f'config.data.classes must list at least 2 distinct names, got {list(classes)}')
  checks = [
      ('config.data.image_size', config.data.image_size, config.data.image_size >= 8),
      ('config.train.num_epochs', config.train.num_epochs, config.train.num_epochs >= 1),
      ('config.train.learning_rate', config.train.learning_rate, config.train.learning_rate > 0),
      ('config.train.log_every_steps', config.train.log_every_steps, config.train.log_every_steps >= 1),
      ('config.data.val_fraction', config.data.val_fraction, 0.0 <= config.data.val_fraction < 1.0),
      ('config.train.class_weighting', config.train.class_weighting,
       config.train.class_weighting in ('balanced', 'none')),
      ('config.train.source_weighting', config.train.get('source_weighting', 'none'),
       config.train.get('source_weighting', 'none') in ('balanced', 'none')),
      ('config.checkpoint.keep_latest', config.checkpoint.keep_latest, config.checkpoint.keep_latest >= 1),
      ('config.checkpoint.keep_best', config.checkpoint.keep_best, config.checkpoint.keep_best >= 0),
      ('config.eval.n_bootstrap', config.eval.n_bootstrap, config.eval.n_bootstrap >= 1),
  ]
  for field, value, ok in checks:
    if not ok:
      raise ValueError(f'{field}={value!r} is not allowed')
  augment.augment_settings(config.augment)  # Names the field of a bad augmentation value.
  sources_lib.extra_sources(config)  # Names the field of a bad extra source (config.data.extra_*).


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


def _check_finite(window: list[tuple[int, steps.TrainMetrics]]) -> None:
  """Raises FloatingPointError naming the first step whose loss is NaN or inf."""
  losses = jax.device_get([m.loss.total for _, m in window])
  for (step, _), loss in zip(window, losses):
    if not np.isfinite(loss):
      raise FloatingPointError(f'training loss is {loss} at step {step}: stopping (nothing of it is saved)')


def _merge(window: list[tuple[int, steps.TrainMetrics]]) -> dict[str, float]:
  """Merges per-step metrics and fetches their values."""
  merged = window[0][1]
  for _, m in window[1:]:
    merged = merged.merge(m)
  return {f'train_{k}': float(v) for k, v in merged.compute().items()}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       data: loading.TrainingData | None = None) -> dict[str, Any]:
  """Trains config's model on data.root/train, validating each epoch; resumes from workdir's checkpoints.

  `data` (already decoded and split, e.g. one cross-validation fold) skips loading. Ends by evaluating the best
  checkpoint on validation (and test/, if present) and drawing the curves. Returns a summary (also written to
  workdir/summary.json). On SIGTERM or SIGINT (Ctrl-C) it saves the current step and raises preemption.Preempted.
  The run holds workdir's lock throughout, and refuses a non-empty folder that is not a lungjax run (lungjax/workdir.py).
  """
  with workdir_lib.owned(workdir), preemption.StopRequest() as stop:
    return _train_and_evaluate(config, workdir, data, stop)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, data: loading.TrainingData | None,
                        stop: preemption.StopRequest) -> dict[str, Any]:
  """train_and_evaluate's body; `stop` says when a preemption was requested."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  classes = tuple(config.data.classes)
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size(config.train.batch_size, mesh, 'config.train.batch_size')
  mesh_lib.check_batch_size(config.eval.batch_size, mesh, 'config.eval.batch_size')

  data = data or loading.load_training_data(config)
  host_memory.release_free_memory()  # The decoders' full-size scratch goes back to the system before training.
  weights_C = class_weights(data.train.labels_N, config)
  logging.info('class weights: %s', dict(zip(classes, np.round(weights_C, 4).tolist())))
  weights_N = None
  if config.train.get('source_weighting', 'none') != 'none':
    sources_N, source_names = sources_lib.source_indices(data.train)
    weights_N = splits.example_weights(data.train.labels_N, sources_N, weights_C, config.train.source_weighting)
    logging.info('source weighting %s: mean weight per (source, class): %s', config.train.source_weighting, {
        f'{name}/{c}': round(float(weights_N[(sources_N == s) & (data.train.labels_N == k)].mean()), 4)
        for s, name in enumerate(source_names) for k, c in enumerate(classes)
        if np.any((sources_N == s) & (data.train.labels_N == k))})
  steps_per_epoch = len(data.train) // config.train.batch_size
  num_steps = steps_per_epoch * config.train.num_epochs
  dataset = pipeline.train_dataset(data.train.images_NHWC, data.train.labels_N,
                                   global_batch_size=config.train.batch_size,
                                   num_epochs=config.train.num_epochs, seed=config.seed, weights_N=weights_N)
  read_options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
  data_iter = iter(dataset.to_iter_dataset(read_options))

  model = create_model(config.model, len(classes))
  tx = steps.create_optimizer(config.train)
  manager = checkpoints.create_manager(workdir, config.checkpoint)
  history: list[dict[str, float]] = []
  abstract = steps.abstract_train_state(model, tx, config.data.image_size, mesh)
  run_fingerprint = fingerprint_lib.run_fingerprint(config, data, abstract, read_options.num_threads)
  manager, restored = checkpoints.resume(manager, workdir, config.checkpoint, abstract, data_iter, run_fingerprint)
  if restored is not None:
    state, history = restored.state, list(restored.history['epochs'])
    logging.info('resumed from %s at step %d', checkpoints.checkpoint_dir(workdir), restored.step)
  else:
    state = steps.jit_create_train_state(model, tx, config.data.image_size, mesh)(jax.random.PRNGKey(config.seed))
    state = warm_start.warm_start(config, workdir, state, data, tx)
  # Only now that every check of a resume has passed (a refused one leaves the workdir as it was): the run's files.
  if distributed.is_main_process():  # Multi-host: process 0 writes the run's files, all processes compute.
    with open(os.path.join(workdir, 'config.json'), 'w') as f:  # What eval, explain and predict rebuild the model from.
      f.write(config.to_json_best_effort(indent=2))
    # What eval looks for copies of training images in (not decoding them again).
    loading.save_training_thumbnails(loading.TrainingThumbnails.of(data.train_folder),
                                     loading.training_thumbnails_path(workdir))
  # clu's writers; TensorBoard event files without TensorFlow where it is not installed (lungjax/event_writer.py).
  writer = event_writer.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  writer.write_hparams(_flatten(config.to_dict()))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  logging.info('model %s: %d parameters; %d steps (%d epochs x %d)', config.model.name, n_params, num_steps,
               config.train.num_epochs, steps_per_epoch)

  frozen_mask, freeze_steps = warm_start.frozen_parameters(config, state.params, steps_per_epoch)
  options = steps.compiler_options(config.train.get('cpu_compiler_options', ''))
  train_step = steps.jit_train_step(model, tx, weights_C, mesh, augment_fn=augment.make_augment_fn(config.augment),
                                    frozen_mask=frozen_mask, freeze_steps=freeze_steps, compiler_options=options)
  eval_step = steps.jit_eval_step(model, mesh, compiler_options=options)
  batch_sharding = mesh_lib.batch_sharded(mesh)
  report_progress = event_writer.periodic_actions().ReportProgress(num_train_steps=num_steps, writer=writer)
  first_step = int(state.step)
  epoch_window: list[tuple[int, steps.TrainMetrics]] = []
  log_window: list[tuple[int, steps.TrainMetrics]] = []
  start_time = time.perf_counter()
  for step in progress.progress(range(first_step + 1, num_steps + 1), num_steps - first_step,
                                f'training {config.train.num_epochs} epochs x {steps_per_epoch} steps'):
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      batch = mesh_lib.to_global_batch(next(data_iter), batch_sharding)
      state, step_metrics = train_step(state, batch)
    epoch_window.append((step, step_metrics))
    log_window.append((step, step_metrics))
    report_progress(step)
    epoch_end = step % steps_per_epoch == 0
    if step % config.train.log_every_steps == 0 or epoch_end:
      _check_finite(log_window)
      writer.write_scalars(step, _merge(log_window))
      log_window = []
    if epoch_end:
      row = {'epoch': step // steps_per_epoch, 'step': step, **_merge(epoch_window)}
      epoch_window = []
      metrics = None
      if len(data.val):
        probabilities_NC = evaluate.predict_probabilities(eval_step, state, data.val, config.eval.batch_size, mesh)
        val = evaluate.evaluation_metrics(data.val.labels_N, probabilities_NC, classes)
        row.update({f'val_{k}': v for k, v in (('loss', val['loss']), ('accuracy', val['accuracy']))})
        row.update({f'val_macro_{k}': v for k, v in val['macro_avg'].items()})
        metrics = {k: v for k, v in row.items() if k.startswith('val_')}
      row['wall_s'] = round(time.perf_counter() - start_time, 2)
      history.append(row)
      writer.write_scalars(step, {k: v for k, v in row.items() if k.startswith(('train_', 'val_'))})
      logging.info('epoch %d: %s', row['epoch'], ', '.join(
          f'{k} {v:.4f}' for k, v in row.items() if k.startswith(('train_', 'val_'))))
      checkpoints.save(manager, state, data_iter, history, metrics, run_fingerprint)
    if stop.should_stop(step, manager):
      if not epoch_end:
        checkpoints.save(manager, state, data_iter, history, None, run_fingerprint)
      checkpoints.wait(manager)
      manager.close()
      raise preemption.Preempted(step, checkpoints.checkpoint_dir(workdir), stop.signal_name)
  checkpoints.wait(manager)
  distributed.check_replicas_equal(state, 'train state')  # Multi-host: every process ends with the same state.
  writer.flush()
  train_seconds = time.perf_counter() - start_time

  best_step = manager.best_step() if len(data.val) else manager.latest_step()
  best_step = manager.latest_step() if best_step is None else best_step
  abstract = steps.abstract_train_state(model, tx, config.data.image_size, mesh)
  best_state = checkpoints.restore_state(manager, best_step, abstract)
  manager.close()
  summary: dict[str, Any] = {
      'config': config.name, 'model': config.model.name, 'n_params': n_params, 'best_step': best_step,
      'best_metric': config.checkpoint.best_metric, 'num_steps': num_steps, 'steps_per_epoch': steps_per_epoch,
      'n_train': len(data.train), 'n_val': len(data.val), 'class_weights': dict(zip(classes, weights_C.tolist())),
      'train_seconds_this_run': round(train_seconds, 2), 'first_step_this_run': first_step,
      'skipped_images': [list(item) for item in data.train_folder.skipped_report()],
      'devices': [str(d) for d in jax.devices()], 'history': history, 'evaluations': {}}
  if history and distributed.is_main_process():
    report.plot_curves(history, os.path.join(workdir, 'curves.png'))
  split_folders = {}
  calibration = None
  if len(data.val):
    split_folders['val'] = loading.FolderImages(data.train_folder.folder, data.val, ())
    val_probabilities_NC = evaluate.predict_probabilities(eval_step, best_state, data.val, config.eval.batch_size, mesh)
    if len(data.val) >= 2:  # Cross-fitting needs 2 folds of at least one image each.
      fit = calibration_lib.cross_fit(data.val.labels_N, val_probabilities_NC, calibration_lib.DEFAULT_FOLDS,
                                      config.seed)
      calibration = calibration_lib.record(fit, data.val.labels_N, val_probabilities_NC, best_step)
      summary['temperature'] = fit.temperature
  if distributed.is_main_process():
    if calibration is not None:
      calibration_lib.write(workdir, calibration)
    elif os.path.exists(calibration_lib.path(workdir)):  # An earlier run's: not this checkpoint's.
      os.remove(calibration_lib.path(workdir))
  if calibration is None:
    logging.warning('%d validation images: no temperature fitted (cross-fitting needs 2)', len(data.val))
  if (test := data.load_test(config)) is not None:
    split_folders['test'] = test
  for name, loaded in split_folders.items():
    out_dir = os.path.join(workdir, 'eval', name)
    title = f'{config.name} on {name}'
    if name == 'val':  # Already predicted to fit the temperature: its calibrated ECE is out of fold.
      metrics = evaluate.report_predictions(val_probabilities_NC, loaded, config, out_dir, title, best_step,
                                            calibration, calibration_fitted_here=True)
    else:
      metrics = evaluate.evaluate_and_report(eval_step, best_state, loaded, config, mesh, out_dir, title, best_step,
                                             calibration, training=data.train_folder.decoded)
    summary['evaluations'][name] = {'dir': out_dir, 'accuracy': metrics['accuracy'],
                                    'macro_avg': metrics['macro_avg']}
    if 'per_source' in metrics:
      summary['evaluations'][name]['per_source'] = {
          source: {'n_images': row['n_images'], 'accuracy': row['accuracy'], 'macro_avg': row['macro_avg'],
                   'recall': {c: v['recall'] for c, v in row['per_class'].items() if v['support']}}
          for source, row in metrics['per_source'].items()}
  if distributed.is_main_process():
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f, indent=2)
    model_card.write_model_card(workdir, config, summary, run_fingerprint, data)
  distributed.barrier('train_and_evaluate')  # Every process returns once process 0's files are written.
  return summary
