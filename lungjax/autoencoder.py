"""Stage 1 of the autoencoder variant: pretrain the CNN's conv stack on reconstruction (pretrain), before the
classifier trains (train.train_and_evaluate calls it on a fresh run; warm_start loads the encoder it returns).

It trains through the classifier's pieces: steps.TrainState, steps.make_train_step on `autoencoder_loss`, and the
one loop fit.fit (NaN check, epoch checkpoints, SIGTERM / Ctrl-C asked every step). Everything lives under
workdir/autoencoder/: checkpoints/ (latest epoch, or the step a stop saved; resumable), settings.json, history.json
(per-epoch MSE) and reconstructions.png (also copied to workdir/reconstructions.png).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import grain
import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Mesh

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from lungjax import checkpoints, fit as fit_lib, steps
from lungjax.runtime import mesh as mesh_lib, preemption, run_fields, workdir as workdir_lib
from lungjax.data import folders, images, loading, pipeline, preprocess
from lungjax.models.autoencoder import ConvAutoencoder, encoder_layer_names

GRID_IMAGES = 8  # Inputs above, their reconstructions below.


def _settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Stage 1's settings.json: {'config.<field>': value} of run_fields.STAGE1_FIELDS (folders absolute, sequences as
  lists). Resuming a stage-1 checkpoint under other values would mix two runs; num_epochs may grow."""
  settings = {}
  for field in run_fields.STAGE1_FIELDS:
    found = run_fields.value(config, field)
    if field == 'autoencoder.extra_dirs':
      found = [os.path.abspath(d) for d in found]
    settings[f'config.{field}'] = list(found) if isinstance(found, (tuple, list)) else found
  return settings


_PNG_METADATA = {'Software': None}  # PNGs carry no metadata at all.


@dataclasses.dataclass(frozen=True)
class PretrainedEncoder:
  """Stage 1's product: the autoencoder parameters whose Conv_* leaves become the CNN's, and how they were got."""

  params: Any
  description: str  # One paragraph for the log and workdir/warm_start.txt.


@dataclasses.dataclass(frozen=True)
class Stage1Result:
  """The trained autoencoder parameters and how this call got them."""

  params: Any
  history: list[dict[str, float]]  # One row per epoch: epoch, step, mse.
  n_images: int
  first_step: int  # The step this call started from (num_steps when a finished stage 1 was reused).
  num_steps: int
  reused: bool  # True when stage 1 had already finished and nothing was trained.


def stage_dir(workdir: str) -> str:
  """Where stage 1 keeps its checkpoints, history and reconstructions."""
  return os.path.abspath(os.path.join(workdir, 'autoencoder'))


def enabled(config: ml_collections.ConfigDict) -> bool:
  """True when the config asks for stage 1 (config.autoencoder.enabled) before the classifier trains."""
  return bool(config.autoencoder.enabled)


def create_model(config: ml_collections.ConfigDict) -> ConvAutoencoder:
  """The autoencoder whose encoder is config.model's conv stack."""
  return ConvAutoencoder(conv_features=tuple(config.model.conv_features), dtype=config.model.dtype)


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam at config.autoencoder.learning_rate with the classifier's (Keras') betas and epsilon."""
  return optax.adam(config.autoencoder.learning_rate, b1=config.train.adam_b1, b2=config.train.adam_b2,
                    eps=config.train.adam_eps)


def create_state(model: ConvAutoencoder, tx: optax.GradientTransformation, image_size: int,
                 rng: jax.Array) -> steps.TrainState:
  """The shared steps.TrainState of stage 1: the autoencoder initialised on a dummy uint8 batch with `rng`, the
  optimizer on its parameters, no other variables; the dropout key (unused: no dropout) is folded from rng."""
  params = model.init(rng, jnp.zeros((1, image_size, image_size, 3), jnp.uint8))['params']
  return steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state={}, opt_state=tx.init(params),
                          dropout_key=jax.random.fold_in(rng, 1))


def reconstruction_loss(reconstructions_BHWC: jax.Array, images_BHWC: jax.Array) -> jax.Array:
  """Mean squared error between reconstructions in [0, 1] and the images rescaled by 1/255."""
  targets_BHWC = images_BHWC.astype(jnp.float32) / 255.0
  return jnp.mean(jnp.square(reconstructions_BHWC.astype(jnp.float32) - targets_BHWC))


def autoencoder_loss(model: ConvAutoencoder) -> steps.LossFn:
  """Stage 1's steps.LossFn: the reconstruction MSE of batch['image'] (labels unused)."""

  def loss_fn(params, model_state, batch, key):
    del key  # No dropout, no augmentation.
    loss = reconstruction_loss(model.apply({'params': params}, batch['image']), batch['image'])
    return loss, (steps.LossMetrics.single_from_model_output(loss=loss), model_state)

  return loss_fn


def jit_train_step(model: ConvAutoencoder, tx: optax.GradientTransformation, mesh: Mesh):
  """Stage 1's train step: steps.make_train_step on autoencoder_loss (state donated, batch sharded)."""
  return steps.make_train_step(autoencoder_loss(model), tx, mesh)


def abstract_state(model: ConvAutoencoder, tx: optax.GradientTransformation, image_size: int,
                   mesh: Mesh) -> steps.TrainState:
  """The state's shapes, dtypes and shardings, to restore a checkpoint without initialising."""
  return steps.abstract_state(functools.partial(create_state, model, tx, image_size), mesh)


def create_manager(workdir: str, *, read_only: bool = False) -> ocp.CheckpointManager:
  """An orbax manager over workdir/autoencoder/checkpoints that keeps only the latest step."""
  options = ocp.CheckpointManagerOptions(
      preservation_policy=None if read_only else ocp.checkpoint_managers.LatestN(n=1),
      read_only=read_only, create=not read_only, cleanup_tmp_directories=not read_only)
  if not read_only:
    checkpoints.remove_uncommitted(os.path.join(stage_dir(workdir), 'checkpoints'))
  return ocp.CheckpointManager(os.path.join(stage_dir(workdir), 'checkpoints'), options=options,
                               item_names=checkpoints.ITEMS)


def _restore_history(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """Restores only the JSON item of `step`: {'epochs': [...], 'n_images': n}."""
  return dict(manager.restore(step, args=ocp.args.Composite(history=ocp.args.JsonRestore())).history)


def _check_settings(config: ml_collections.ConfigDict, workdir: str, has_checkpoint: bool) -> None:
  """Writes settings.json for a fresh stage 1; raises ValueError naming the fields a checkpoint was trained without."""
  path = os.path.join(stage_dir(workdir), 'settings.json')
  current = _settings(config)
  if has_checkpoint and os.path.exists(path):
    saved = workdir_lib.read_json(path)  # CorruptFileError names a settings.json cut short.
    changed = [f'{field} was {saved.get(field)!r}, now {value!r}' for field, value in current.items()
               if saved.get(field) != value]
    if changed:
      raise ValueError(f'{stage_dir(workdir)!r} holds a stage 1 trained with other settings ({"; ".join(changed)}): '
                       'use another --workdir, or delete that folder to retrain stage 1')
  elif not has_checkpoint:
    os.makedirs(stage_dir(workdir), exist_ok=True)
    workdir_lib.write_json(path, current)


def is_finished(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """True when workdir's stage-1 checkpoint has trained all config.autoencoder.num_epochs epochs."""
  if not os.path.isdir(os.path.join(stage_dir(workdir), 'checkpoints')):
    return False
  manager = create_manager(workdir, read_only=True)
  try:
    step = manager.latest_step()
    return step is not None and len(_restore_history(manager, step)['epochs']) >= config.autoencoder.num_epochs
  finally:
    manager.close()


def restore_params(config: ml_collections.ConfigDict, workdir: str) -> Any:
  """Returns the autoencoder parameters of workdir's latest stage-1 checkpoint."""
  manager = create_manager(workdir, read_only=True)
  try:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f'no stage-1 checkpoint in {os.path.join(stage_dir(workdir), "checkpoints")!r}')
    model, tx = create_model(config), create_optimizer(config)
    abstract = abstract_state(model, tx, config.data.image_size, mesh_lib.make_mesh())
    try:
      return checkpoints.restore_chosen(manager, abstract, stage_dir(workdir), requested=step,
                                        fallback=config.checkpoint.fallback_to_good_step).state.params
    except checkpoints.CheckpointMismatchError as error:
      raise _old_layout_hint(error, workdir) from error
  finally:
    manager.close()


def _old_layout_hint(error: checkpoints.CheckpointMismatchError, workdir: str) -> checkpoints.CheckpointMismatchError:
  """The mismatch error of a stage-1 checkpoint saved before stage 1 trained through fit.fit (its state had no
  dropout_key nor model_state), with what to do."""
  if 'dropout_key' not in str(error):
    return error
  return checkpoints.CheckpointMismatchError(
      f'{error}. It is a stage 1 saved by an older lungjax (its own state class, before the shared trainer): delete '
      f'{stage_dir(workdir)!r} to retrain stage 1, or finish that run with the lungjax that started it')


def train_autoencoder(config: ml_collections.ConfigDict, workdir: str, images_NHWC: np.ndarray,
                      stop: preemption.StopRequest | None = None) -> Stage1Result:
  """Trains (or resumes, or reuses when finished) stage 1 on images_NHWC through fit.fit, checkpointing every epoch.

  The stage-1 fields are assumed valid (config_check.validate). `stop` (the training run's StopRequest; a new one
  when None) is asked every step: on SIGTERM / Ctrl-C the step is saved and preemption.Preempted raised.
  """
  if stop is None:
    with preemption.StopRequest() as own_stop:
      return train_autoencoder(config, workdir, images_NHWC, own_stop)
  ae = config.autoencoder
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size(ae.batch_size, mesh, 'config.autoencoder.batch_size')
  model, tx = create_model(config), create_optimizer(config)
  manager = create_manager(workdir)
  try:
    latest = manager.latest_step()
    _check_settings(config, workdir, latest is not None)
    abstract = abstract_state(model, tx, config.data.image_size, mesh)
    try:
      good = checkpoints.restore_latest_good(manager, abstract, None) if latest is not None else None
    except checkpoints.CheckpointMismatchError as error:
      raise _old_layout_hint(error, workdir) from error
    if good is not None:
      saved, latest = good.history, good.step
      if len(saved['epochs']) >= ae.num_epochs:
        logging.info('stage 1: reusing the finished autoencoder in %s (step %d)', stage_dir(workdir), latest)
        return Stage1Result(good.state.params, list(saved['epochs']), int(saved['n_images']), latest, latest, True)
    if len(images_NHWC) < ae.batch_size:
      raise ValueError(f'{len(images_NHWC)} stage-1 images are fewer than one batch of '
                       f'config.autoencoder.batch_size={ae.batch_size}')
    steps_per_epoch = len(images_NHWC) // ae.batch_size
    num_steps = steps_per_epoch * ae.num_epochs
    dataset = pipeline.train_dataset(images_NHWC, np.zeros(len(images_NHWC), np.int32),
                                     global_batch_size=ae.batch_size, num_epochs=ae.num_epochs, seed=config.seed)
    data_iter = iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)))
    if good is not None:
      restored = checkpoints.restore_verified(manager, good.step, abstract, data_iter)
      state, history = restored.state, list(restored.history['epochs'])
      logging.info('stage 1: resumed from %s at step %d', stage_dir(workdir), latest)
    else:
      state = jax.jit(functools.partial(create_state, model, tx, config.data.image_size),
                      out_shardings=mesh_lib.replicated(mesh))(jax.random.PRNGKey(config.seed))
      history = []
    first_step = int(state.step)
    logging.info('stage 1: %d images, %d steps (%d epochs x %d), from step %d', len(images_NHWC), num_steps,
                 ae.num_epochs, steps_per_epoch, first_step)

    def end_epoch(state: steps.TrainState, step: int, train_row: dict[str, float]) -> None:
      del state
      history.append({'epoch': step // steps_per_epoch, 'step': step, 'mse': train_row['train_loss']})
      logging.info('stage 1 epoch %d: reconstruction MSE %.5f', history[-1]['epoch'], history[-1]['mse'])

    def save(state: steps.TrainState, metrics: dict[str, float] | None) -> None:
      checkpoints.save_items(manager, int(state.step), state, data_iter,
                             {'epochs': history, 'n_images': len(images_NHWC)}, metrics)

    state = fit_lib.fit(state, data_iter, manager, stop, train_step=jit_train_step(model, tx, mesh),
                        batch_sharding=mesh_lib.batch_sharded(mesh), num_steps=num_steps,
                        steps_per_epoch=steps_per_epoch, save=save, end_epoch=end_epoch,
                        what='autoencoder reconstruction', hint='; lower config.autoencoder.learning_rate',
                        step_label='stage-1 step')
    return Stage1Result(state.params, history, len(images_NHWC), first_step, num_steps, False)
  finally:
    manager.close()


def _walk_images(folder: str) -> list[str]:
  """Every .jpg/.jpeg/.png file under folder, recursively, in sorted order; hidden files and folders are skipped."""
  paths = []
  for parent, sub_folders, files in os.walk(folder):
    sub_folders[:] = sorted(d for d in sub_folders if not d.startswith('.'))
    paths += [os.path.join(parent, f) for f in sorted(files) if not f.startswith('.') and folders.is_image_file(f)]
  return paths


def extra_image_paths(config: ml_collections.ConfigDict) -> list[list[str]]:
  """The image files of each folder of config.autoencoder.extra_dirs (listed, not decoded): config_check's hook.

  FileNotFoundError for a folder that is not there, ValueError for one without a .jpg/.jpeg/.png image."""
  found = []
  for folder in config.autoencoder.extra_dirs:
    if not os.path.isdir(folder):
      raise FileNotFoundError(f'config.autoencoder.extra_dirs folder not found: {folder!r}')
    paths = _walk_images(folder)
    if not paths:
      raise ValueError(f'config.autoencoder.extra_dirs folder {folder!r} holds no .jpg/.jpeg/.png images')
    found.append(paths)
  return found


def load_extra_images(config: ml_collections.ConfigDict,
                      exclude_hashes: Sequence[str] = ()) -> images.DecodedImages:
  """Decodes the images of config.autoencoder.extra_dirs; exact copies of `exclude_hashes` (validation) are dropped."""
  records = [folders.Record(path, 0) for paths in extra_image_paths(config) for path in paths]
  decoded = images.decode_records(records, config.data.image_size, skip_bad_images=config.data.skip_bad_images,
                                  threads=config.data.decode_threads, preprocess=preprocess.settings_of(config))
  for path, reason in decoded.skipped:
    logging.warning('stage 1: skipped %s: %s', path, reason)
  excluded = set(exclude_hashes)
  kept = [i for i, pixel_hash in enumerate(decoded.pixel_hashes) if pixel_hash not in excluded]
  if records:
    logging.info('stage 1: %d extra unlabelled images from %d folders (%d undecodable skipped, %d copies of '
                 'validation images dropped)', len(kept), len(config.autoencoder.extra_dirs), len(decoded.skipped),
                 len(decoded) - len(kept))
  return decoded.subset(kept)


def plot_reconstructions(inputs_NHWC: np.ndarray, outputs_NHWC: np.ndarray, path: str, title: str) -> None:
  """Draws the inputs in the top row and their reconstructions below, as a PNG without metadata."""
  n = len(inputs_NHWC)
  fig, axes = plt.subplots(2, n, figsize=(1.6 * max(n, 2), 3.6), squeeze=False, layout='constrained')
  for row, (label, pixels_NHWC) in enumerate((('input', inputs_NHWC), ('reconstruction', outputs_NHWC))):
    for column in range(n):
      ax = axes[row, column]
      ax.imshow(pixels_NHWC[column], interpolation='nearest')
      ax.set_xticks([])
      ax.set_yticks([])
    axes[row, 0].set_ylabel(label, fontsize=8)
  fig.suptitle(title, fontsize=9)
  workdir_lib.write_figure(path, fig, dpi=100, metadata=_PNG_METADATA)
  plt.close(fig)


def write_outputs(config: ml_collections.ConfigDict, workdir: str, result: Stage1Result,
                  grid_NHWC: np.ndarray) -> None:
  """Writes history.json and reconstructions.png (inputs above, reconstructions below), copied to the workdir."""
  out_dir = stage_dir(workdir)
  workdir_lib.write_json(os.path.join(out_dir, 'history.json'),
                         {'epochs': result.history, 'n_images': result.n_images, 'num_steps': result.num_steps})
  reconstructions_NHWC = jax.jit(create_model(config).apply)({'params': result.params}, jnp.asarray(grid_NHWC))
  outputs_NHWC = np.clip(np.rint(np.asarray(reconstructions_NHWC) * 255.0), 0, 255).astype(np.uint8)
  path = os.path.join(out_dir, 'reconstructions.png')
  mse = result.history[-1]['mse'] if result.history else float('nan')
  plot_reconstructions(grid_NHWC, outputs_NHWC, path, f'{config.name}: autoencoder reconstructions '
                       f'(last epoch MSE {mse:.4f})')
  with open(path, 'rb') as f:
    workdir_lib.write_bytes(os.path.join(workdir, 'reconstructions.png'), f.read())


def encoder_mask(params: dict[str, Any]) -> Any:
  """A pytree like the classifier's params: True for the encoder's conv leaves (modules Conv_*), False elsewhere."""
  mask = {}
  for name, subtree in params.items():
    is_encoder = name.startswith('Conv_')
    mask[name] = jax.tree.map(lambda _: is_encoder, subtree)  # pylint: disable=cell-var-from-loop
  return mask


def replace_encoder(variables: dict[str, Any], autoencoder_params: dict[str, Any],
                    conv_features: Sequence[int]) -> dict[str, Any]:
  """Returns the classifier variables with each Conv_i replaced by the autoencoder's (shapes must match)."""
  params = dict(variables['params'])
  for name in encoder_layer_names(conv_features):
    if name not in params:
      raise ValueError(f'the classifier has no {name!r} to load the encoder into: config.model.conv_features '
                       f'must match between the autoencoder and the CNN')
    shapes = jax.tree.map(jnp.shape, params[name])
    if shapes != jax.tree.map(jnp.shape, autoencoder_params[name]):
      raise ValueError(f'encoder {name} has shapes {jax.tree.map(jnp.shape, autoencoder_params[name])} but the '
                       f'classifier\'s has {shapes}: config.model.conv_features must match')
    params[name] = autoencoder_params[name]
  return {**variables, 'params': params}


def grid_images(images_NHWC: np.ndarray) -> np.ndarray:
  """Up to GRID_IMAGES images spread evenly over the array (so every class of a class-sorted split shows)."""
  indices = np.unique(np.linspace(0, len(images_NHWC) - 1, min(GRID_IMAGES, len(images_NHWC))).round().astype(int))
  return images_NHWC[indices]


def pretrain(config: ml_collections.ConfigDict, workdir: str, data: loading.TrainingData,
             stop: preemption.StopRequest | None = None) -> PretrainedEncoder:
  """Stage 1: trains (or resumes, or reuses when finished) the autoencoder on the train split (+ extra_dirs).

  Writes workdir/autoencoder/ (checkpoints, settings.json, history.json, reconstructions.png) and
  workdir/reconstructions.png; returns the parameters for warm_start to load into the CNN's conv stack.
  """
  if is_finished(config, workdir):
    images_NHWC, n_extra = data.train.images_NHWC, None  # Nothing to train: the extra folders are not decoded.
  else:
    extra = load_extra_images(config, exclude_hashes=data.val.pixel_hashes)
    images_NHWC = np.concatenate([data.train.images_NHWC, extra.images_NHWC])
    n_extra = len(extra)
  result = train_autoencoder(config, workdir, images_NHWC, stop)
  write_outputs(config, workdir, result, grid_images(data.train.images_NHWC))
  names = encoder_layer_names(config.model.conv_features)
  n_params = sum(int(np.prod(x.shape)) for name in names for x in jax.tree.leaves(result.params[name]))
  if result.reused:
    how = 'reused a finished stage 1'
  elif result.first_step:
    how = f'resumed stage 1 at step {result.first_step} of {result.num_steps}'
  else:
    how = f'trained stage 1 for {result.num_steps} steps'
  sources = 'the training split' if n_extra is None else (
      f'{len(data.train)} training-split and {n_extra} extra unlabelled images')
  if config.autoencoder.freeze_encoder:
    use = 'It stays frozen for all of stage 2 (config.autoencoder.freeze_encoder=True).'
  else:
    use = (f'It is fine-tuned in stage 2 (config.autoencoder.freeze_encoder=False), frozen for the first '
           f'{config.train.freeze_backbone_epochs} epochs (config.train.freeze_backbone_epochs).')
  description = (f'Loaded the encoder of a convolutional autoencoder into the CNN\'s {", ".join(names)} '
                 f'({n_params} parameters): {how} in {stage_dir(workdir)} ({len(result.history)} epochs of '
                 f'reconstruction MSE on {result.n_images} images: {sources}); final reconstruction MSE '
                 f'{result.history[-1]["mse"]:.5f} (pixels in [0, 1]). {use}')
  return PretrainedEncoder(result.params, description)
