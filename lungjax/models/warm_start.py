"""Warm starts: a fresh state's weights replaced by a Keras ImageNet file (model.init_from) or by a pretrained
autoencoder's encoder (autoencoder.pretrain); and which parameters stay frozen for how many steps."""

from __future__ import annotations

import os
from typing import Any

import ml_collections
from absl import logging

from lungjax import autoencoder, steps
from lungjax.runtime import workdir as workdir_lib


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
