"""train_and_evaluate(config, workdir): one training run, from data and a fresh or resumed state to its reports."""

from __future__ import annotations

import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from lungjax import checkpoints, evaluate, final_evaluation, fit as fit_lib, steps
from lungjax.data import batches as batches_lib, loading
from lungjax.models import warm_start
from lungjax.runtime import run as run_lib


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
  with run_lib.open_run(config, workdir) as run:  # Lock, SIGTERM / Ctrl-C, mesh (lungjax/runtime/run.py).
    config, mesh = run.config, run.mesh
    # Data: decoded once, split by copy groups; batches come from a grain pipeline whose state is checkpointed.
    data = data or loading.load_training_data(config)
    batches = batches_lib.training_batches(config, data)
    steps_per_epoch, num_steps = batches.steps_per_epoch, batches.num_steps

    # State: resumed from the newest good checkpoint of this same run, else fresh (and maybe warm-started).
    start = warm_start.initial_state(config, workdir, data, batches.data_iter, num_steps, batches.num_threads, mesh,
                                     run.stop)
    state, history, manager = start.state, start.history, start.manager
    loading.write_run_files(config, workdir, data)  # Only now that every check of a resume has passed.
    writer = run.open_writer()
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    logging.info('model %s: %d parameters; %d steps (%d epochs x %d)', config.model.name, n_params, num_steps,
                 config.train.num_epochs, steps_per_epoch)

    # Steps: the jitted, sharded train step (loss in steps.py) and eval step.
    frozen_mask, freeze_steps = warm_start.frozen_parameters(config, state.params, steps_per_epoch)
    options = steps.compiler_options(config.train.cpu_compiler_options)
    train_step = steps.jit_train_step(start.model, start.tx, batches.weights_C, mesh, augment_fn=batches.augment_fn,
                                      frozen_mask=frozen_mask, freeze_steps=freeze_steps, compiler_options=options)
    eval_step = steps.jit_eval_step(start.model, mesh, compiler_options=options)
    first_step = int(state.step)
    start_time = time.perf_counter()

    def end_epoch(state: steps.TrainState, step: int, train_row: dict[str, float]) -> dict[str, float] | None:
      row = {'epoch': step // steps_per_epoch, 'step': step, **train_row}
      row.update(evaluate.validation_row(eval_step, state, data.val, config, mesh))
      metrics = {k: v for k, v in row.items() if k.startswith('val_')} or None
      row['wall_s'] = round(time.perf_counter() - start_time, 2)
      history.append(row)
      writer.write_scalars(step, {k: v for k, v in row.items() if k.startswith(('train_', 'val_'))})
      logging.info('epoch %d: %s', row['epoch'], ', '.join(
          f'{k} {v:.4f}' for k, v in row.items() if k.startswith(('train_', 'val_'))))
      return metrics

    def save(state: steps.TrainState, metrics: dict[str, float] | None) -> None:
      checkpoints.save(manager, state, batches.data_iter, history, metrics, start.fingerprint)

    # The loop (lungjax/fit.py): log points, NaN check, epoch ends, checkpoints, and SIGTERM / Ctrl-C each step.
    state = fit_lib.fit(state, batches.data_iter, manager, run.stop, train_step=train_step,
                        batch_sharding=run.batch_sharding, num_steps=num_steps,
                        steps_per_epoch=steps_per_epoch, save=save, end_epoch=end_epoch,
                        log_every_steps=config.train.log_every_steps, writer=writer,
                        report_progress=run.report_progress(writer, num_steps))
    run.check_replicas_equal(state)  # Multi-host: every process ends with the same state.
    writer.flush()
    train_seconds = time.perf_counter() - start_time

    # Reports: the best checkpoint (by config.checkpoint.best_metric on validation; else the latest) evaluated.
    best_step = checkpoints.best_or_latest(manager, ranked=bool(len(data.val)))
    best_state = checkpoints.restore(manager, best_step, start.abstract, workdir=workdir).state
    manager.close()
    classes = tuple(config.data.classes)
    summary: dict[str, Any] = {
        'config': config.name, 'model': config.model.name, 'n_params': n_params, 'best_step': best_step,
        'best_metric': config.checkpoint.best_metric, 'num_steps': num_steps, 'steps_per_epoch': steps_per_epoch,
        'n_train': len(data.train), 'n_val': len(data.val),
        'class_weights': dict(zip(classes, batches.weights_C.tolist())),
        'source_weighting': config.train.source_weighting,
        'train_seconds_this_run': round(train_seconds, 2), 'first_step_this_run': first_step,
        'skipped_images': [list(item) for item in data.train_folder.skipped_report()],
        'devices': [str(d) for d in jax.devices()], 'history': history}
    if data.grouping is not None:  # What the split kept on one side (copies, and config.data.group_by's groups).
      summary['grouping'] = data.grouping.record()
    return final_evaluation.report_best_checkpoint(config, workdir, summary, eval_step, best_state, best_step, mesh,
                                                   data, start.fingerprint)
