"""Where training starts from: the run's state resumed from its own checkpoints, else fresh (initial_state); a
fresh state's weights replaced by a Keras ImageNet file (model.init_from) or by a pretrained autoencoder's encoder
(autoencoder.pretrain); and which parameters stay frozen for how many steps."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import grain
import jax
import ml_collections
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax import linen as nn
from jax.sharding import Mesh

from lungjax import autoencoder, checkpoints, steps
from lungjax.data import loading
from lungjax.models import create_model
from lungjax.runtime import fingerprint as fingerprint_lib, preemption, workdir as workdir_lib


@dataclasses.dataclass
class InitialState:
  """A run's model and optimizer, its checkpoint manager, and the state it trains from (resumed or fresh)."""

  model: nn.Module
  tx: optax.GradientTransformation
  manager: ocp.CheckpointManager
  abstract: steps.TrainState  # The state's shapes, dtypes and shardings (what restores read into).
  fingerprint: dict[str, Any]  # What the run's checkpoints must carry to be resumed (runtime/fingerprint.py).
  state: steps.TrainState
  history: list[dict[str, float]]  # The epochs' rows so far (empty when fresh).
  resumed_step: int | None  # The step resumed from, or None when fresh.


def initial_state(config: ml_collections.ConfigDict, workdir: str, data: loading.TrainingData,
                  data_iter: grain.DatasetIterator, num_steps: int, num_threads: int, mesh: Mesh,
                  stop: preemption.StopRequest) -> InitialState:
  """The state resumed from the newest good checkpoint of this same run (data_iter restored in place), else fresh:
  initialised from config.seed, after stage 1 (autoencoder.pretrain) when config.autoencoder.enabled, and warm
  started (warm_start)."""
  classes = tuple(config.data.classes)
  model = create_model(config.model, len(classes))
  tx = steps.create_optimizer(config.train, num_steps)
  manager = checkpoints.create_manager(workdir, config.checkpoint)
  abstract = steps.abstract_train_state(model, tx, config.data.image_size, mesh)
  run_fingerprint = fingerprint_lib.run_fingerprint(config, data, abstract, num_threads)
  resumed = checkpoints.restore(manager, 'resume', abstract, workdir=workdir, data_iter=data_iter,
                                checkpoint_config=config.checkpoint, fingerprint=run_fingerprint)
  manager, restored = resumed.manager, resumed.restored
  if restored is not None:
    logging.info('resumed from %s at step %d', checkpoints.checkpoint_dir(workdir), restored.step)
    return InitialState(model, tx, manager, abstract, run_fingerprint, restored.state,
                        list(restored.history['epochs']), restored.step)
  state = steps.jit_create_train_state(model, tx, config.data.image_size, mesh)(jax.random.PRNGKey(config.seed))
  encoder = None
  if autoencoder.enabled(config):  # Stage 1: the conv stack pretrained on reconstruction (resumed or reused).
    encoder = autoencoder.pretrain(config, workdir, data, stop)
  state = warm_start(config, workdir, state, tx, encoder)
  return InitialState(model, tx, manager, abstract, run_fingerprint, state, [], None)


def warm_start(config: ml_collections.ConfigDict, workdir: str, state: steps.TrainState, tx,
               encoder: autoencoder.PretrainedEncoder | None = None) -> steps.TrainState:
  """Returns a fresh state with pretrained weights loaded (and a new optimizer state), or the state as it is.

  Loads config.model.init_from (a Keras weights file) or else `encoder` (stage 1's product) into the CNN's conv
  stack; writes what it loaded to workdir/warm_start.txt.
  """
  variables = {'params': state.params, **state.model_state}
  if config.model.init_from:
    from lungjax.models import keras_weights  # pylint: disable=g-import-not-at-top
    if not os.path.exists(config.model.init_from):
      raise FileNotFoundError(f'config.model.init_from={config.model.init_from!r} does not exist')
    variables, load_report = keras_weights.load_keras_weights(variables, config.model.init_from, config.model)
    summary = load_report.summary()
  elif encoder is not None:
    variables = autoencoder.replace_encoder(variables, encoder.params, config.model.conv_features)
    summary = encoder.description
  else:
    return state
  logging.info('warm start: %s', summary)
  workdir_lib.write_text(os.path.join(workdir, 'warm_start.txt'), summary + '\n')
  params = variables['params']
  return state.replace(params=params, model_state={k: v for k, v in variables.items() if k != 'params'},
                       opt_state=tx.init(params))


def frozen_parameters(config: ml_collections.ConfigDict, params: Any, steps_per_epoch: int) -> tuple[Any, int]:
  """Returns (a params-shaped bool mask of frozen leaves, for how many steps) or (None, 0)."""
  if config.model.init_from and config.train.freeze_backbone_epochs > 0:
    from lungjax.models import keras_weights  # pylint: disable=g-import-not-at-top
    return keras_weights.backbone_mask(params), config.train.freeze_backbone_epochs * steps_per_epoch
  if autoencoder.enabled(config):
    if config.autoencoder.freeze_encoder:
      return autoencoder.encoder_mask(params), config.train.num_epochs * steps_per_epoch
    if config.train.freeze_backbone_epochs > 0:
      return autoencoder.encoder_mask(params), config.train.freeze_backbone_epochs * steps_per_epoch
  return None, 0
