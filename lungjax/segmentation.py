"""Training the lung U-Net (issue 24 part 1): masked films, a patient-grouped split, joint augmentation, Dice + CE.

  python -m lungjax.main --config=configs/lungs.py --mode=train --workdir=W

The films and masks are the rows of config.lungs.metadata (cohen-covid-chestxray/metadata.csv) whose `lung_mask`
is set. Films of one `patientid` stay on one side: the test films (config.lungs.test_fraction, never trained on
nor used to choose anything; the report's Dice) and the validation films (config.data.val_fraction of the rest:
the best checkpoint by val_dice) are drawn by splits.grouped_stratified_split, the test split first. The split is
written to W/split.json.

The U-Net's loss (`dice_ce_loss`, as a steps.LossFn: `unet_loss`) and its joint augmentation (`augment_pair`) are
small pure functions of their own; it trains through the classifier's pieces: steps.TrainState / create_optimizer /
make_train_step, the one loop fit.fit (NaN checks, checkpoints, SIGTERM / Ctrl-C each step), a grain MapDataset
iterator, checkpoints.create_manager / resume / save (orbax, the iterator state and lungjax's checksums), clu
metrics and writers, workdir ownership.
"""

import csv
import dataclasses
import functools
import hashlib
import json
import os
import time
from typing import Any

import flax
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metrics as clu_metrics
from PIL import Image

from lungjax import checkpoints, fit as fit_lib, lungs as lungs_lib, steps
from lungjax.runtime import event_writer, fingerprint as fingerprint_lib
from lungjax.runtime import mesh as mesh_lib, preemption, workdir as workdir_lib
from lungjax.data import images as images_lib, splits
from lungjax.models.unet import UNet

SPLIT_FILE = 'split.json'


@dataclasses.dataclass(frozen=True)
class MaskedFilms:
  """Films with lung masks at the model's side: inputs_NSS uint8 (lungs.model_input), targets_NSS float32 in [0, 1]
  (lungs.mask_target); the metadata rows they came from."""

  files: tuple[str, ...]  # Relative to the metadata table's folder.
  masks: tuple[str, ...]
  patients: tuple[str, ...]
  views: tuple[str, ...]
  inputs_NSS: np.ndarray
  targets_NSS: np.ndarray

  def __len__(self) -> int:
    return len(self.files)

  def subset(self, indices: Any) -> 'MaskedFilms':
    indices = np.asarray(indices, np.int64)
    pick = lambda values: tuple(values[i] for i in indices)
    return MaskedFilms(pick(self.files), pick(self.masks), pick(self.patients), pick(self.views),
                       self.inputs_NSS[indices], self.targets_NSS[indices])


def mask_rows(metadata: str) -> list[dict[str, str]]:
  """The rows of a metadata table with a `lung_mask`; ValueError names the table when a column is missing."""
  with open(metadata, newline='') as f:
    rows = list(csv.DictReader(f))
  missing = {'file', 'lung_mask', 'patientid', 'view'} - set(rows[0] if rows else ())
  if missing:
    raise ValueError(f'config.lungs.metadata={metadata!r} lacks the columns {sorted(missing)}')
  return [row for row in rows if row['lung_mask'].strip()]


def load_film_and_mask(root: str, row: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
  """The full-size uint8 RGB film and its bool mask; ValueError naming both files when their sizes differ."""
  film_path, mask_path = os.path.join(root, row['file']), os.path.join(root, row['lung_mask'])
  with images_lib.open_image(film_path) as image:
    pixels_HWC = images_lib.to_rgb_uint8(image)
  with Image.open(mask_path) as mask:
    mask_HW = np.asarray(mask.convert('L')) > 127
  if mask_HW.shape != pixels_HWC.shape[:2]:
    raise ValueError(f'{mask_path} is {mask_HW.shape[1]}x{mask_HW.shape[0]}, its film {film_path} '
                     f'{pixels_HWC.shape[1]}x{pixels_HWC.shape[0]}')
  return pixels_HWC, mask_HW


def load_masked_films(metadata: str, size: int, limit: int = 0) -> tuple[MaskedFilms, list[tuple[str, str]]]:
  """Every masked film of the table at size x size, and (file, reason) of those that could not be read (counted and
  logged, never silently dropped). limit > 0 keeps the first `limit` rows (tests)."""
  root = os.path.dirname(os.path.abspath(metadata))
  rows = mask_rows(metadata)[:limit or None]
  kept, inputs, targets, skipped = [], [], [], []
  for row in rows:
    try:
      pixels_HWC, mask_HW = load_film_and_mask(root, row)
    except (OSError, ValueError, images_lib.BadImageError) as error:
      skipped.append((row['file'], str(error)))
      continue
    kept.append(row)
    inputs.append(lungs_lib.model_input(pixels_HWC, size))
    targets.append(lungs_lib.mask_target(mask_HW, size))
  if skipped:
    logging.warning('%d of %d masked films could not be read: %s', len(skipped), len(rows), skipped[:5])
  if not kept:
    raise ValueError(f'no readable film with a lung mask in config.lungs.metadata={metadata!r}')
  films = MaskedFilms(tuple(r['file'] for r in kept), tuple(r['lung_mask'] for r in kept),
                      tuple(r['patientid'] for r in kept), tuple(r['view'] for r in kept),
                      np.stack(inputs), np.stack(targets).astype(np.float32))
  return films, skipped


def patient_split(patients: tuple[str, ...], test_fraction: float, val_fraction: float,
                  seed: int) -> dict[str, np.ndarray]:
  """{'train', 'val', 'test'} film indices, each patient's films on one side: test first (test_fraction of the
  films), then val_fraction of the rest (splits.grouped_stratified_split, one class)."""
  labels_N = np.zeros(len(patients), np.int64)
  rest, test = splits.grouped_stratified_split(labels_N, list(patients), test_fraction, seed)
  if val_fraction > 0:
    train_pos, val_pos = splits.grouped_stratified_split(labels_N[rest], [patients[i] for i in rest], val_fraction,
                                                         seed + 1)
    train, val = rest[train_pos], rest[val_pos]
  else:
    train, val = rest, np.zeros(0, np.int64)
  return {'train': np.sort(train), 'val': np.sort(val), 'test': np.sort(test)}


# --- Joint augmentation: one geometric transform for film and mask, intensity changes on the film only. ---

@dataclasses.dataclass(frozen=True)
class AugmentSettings:
  """Ranges each example draws from uniformly (no flips: left and right lungs differ)."""

  scale: tuple[float, float] = (0.9, 1.1)
  shift: tuple[float, float] = (-0.08, 0.08)  # Fraction of the side, each axis on its own.
  rotation_degrees: tuple[float, float] = (-10.0, 10.0)
  contrast: tuple[float, float] = (0.8, 1.25)  # Factor about the film's mean.
  gamma: tuple[float, float] = (0.8, 1.25)
  brightness: tuple[float, float] = (-0.08, 0.08)  # Fraction of 255 added.


def augment_settings(config: ml_collections.ConfigDict) -> AugmentSettings | None:
  """config.lungs.augment as AugmentSettings (None when config.lungs.augment.enabled is False)."""
  given = config.lungs.augment
  if not given.enabled:
    return None
  return AugmentSettings(**{f.name: tuple(float(v) for v in given[f.name])
                            for f in dataclasses.fields(AugmentSettings)})


def _warp(image_SS: jax.Array, matrix_22: jax.Array, offset_2: jax.Array) -> jax.Array:
  """image at (matrix @ (yx - centre) + centre + offset), bilinear, zero outside."""
  size_h, size_w = image_SS.shape
  centre_2 = jnp.array([(size_h - 1) / 2.0, (size_w - 1) / 2.0])
  grid_2HW = jnp.stack(jnp.meshgrid(jnp.arange(size_h, dtype=jnp.float32), jnp.arange(size_w, dtype=jnp.float32),
                                    indexing='ij'))
  coords_2HW = jnp.einsum('ij,jhw->ihw', matrix_22, grid_2HW - centre_2[:, None, None]) + (
      centre_2 + offset_2)[:, None, None]
  return jax.scipy.ndimage.map_coordinates(image_SS, list(coords_2HW), order=1, mode='constant', cval=0.0)


def augment_pair(inputs_BSS: jax.Array, targets_BSS: jax.Array, key: jax.Array,
                 settings: AugmentSettings) -> tuple[jax.Array, jax.Array]:
  """Film (uint8 or float 0-255) and mask (float [0, 1]) moved by the same scale, shift and rotation; contrast,
  gamma and brightness change the film alone. Returns float32 films in [0, 255] and masks in [0, 1]."""
  batch, size = inputs_BSS.shape[0], inputs_BSS.shape[1]
  keys = jax.random.split(key, 6)
  uniform = lambda k, low_high: jax.random.uniform(k, (batch,), minval=low_high[0], maxval=low_high[1])
  scale_B = uniform(keys[0], settings.scale)
  angle_B = jnp.deg2rad(uniform(keys[1], settings.rotation_degrees))
  shift_B2 = jax.random.uniform(keys[2], (batch, 2), minval=settings.shift[0], maxval=settings.shift[1]) * size
  contrast_B, gamma_B = uniform(keys[3], settings.contrast), uniform(keys[4], settings.gamma)
  brightness_B = uniform(keys[5], settings.brightness)
  cos_B, sin_B = jnp.cos(angle_B), jnp.sin(angle_B)
  # Output pixel p reads input (R(-angle) / scale) @ (p - centre - shift) + centre.
  matrix_B22 = jnp.stack([jnp.stack([cos_B, sin_B], -1), jnp.stack([-sin_B, cos_B], -1)], -2) / scale_B[:, None, None]
  offset_B2 = -jnp.einsum('bij,bj->bi', matrix_B22, shift_B2)
  warp = jax.vmap(_warp)
  films_BSS = warp(inputs_BSS.astype(jnp.float32) / 255.0, matrix_B22, offset_B2)
  masks_BSS = warp(targets_BSS.astype(jnp.float32), matrix_B22, offset_B2)
  films_BSS = jnp.clip(films_BSS, 0.0, 1.0) ** gamma_B[:, None, None]
  mean_B11 = films_BSS.mean(axis=(1, 2), keepdims=True)
  films_BSS = (films_BSS - mean_B11) * contrast_B[:, None, None] + mean_B11 + brightness_B[:, None, None]
  return jnp.clip(films_BSS, 0.0, 1.0) * 255.0, jnp.clip(masks_BSS, 0.0, 1.0)


# --- Loss, metrics and the step. ---

def soft_dice_B(logits_BHW: jax.Array, targets_BHW: jax.Array, smooth: float = 1.0) -> jax.Array:
  """Each image's soft Dice of sigmoid(logits) against targets in [0, 1]: (2 sum(p t) + s) / (sum p + sum t + s)."""
  probabilities_BHW = jax.nn.sigmoid(logits_BHW)
  overlap_B = jnp.sum(probabilities_BHW * targets_BHW, axis=(1, 2))
  total_B = jnp.sum(probabilities_BHW, axis=(1, 2)) + jnp.sum(targets_BHW, axis=(1, 2))
  return (2.0 * overlap_B + smooth) / (total_B + smooth)


def dice_ce_loss(logits_BHW: jax.Array, targets_BHW: jax.Array, dice_weight: float = 1.0) -> jax.Array:
  """Mean per-pixel sigmoid cross-entropy + dice_weight * mean(1 - soft Dice)."""
  cross_entropy = jnp.mean(optax.sigmoid_binary_cross_entropy(logits_BHW, targets_BHW))
  return cross_entropy + dice_weight * jnp.mean(1.0 - soft_dice_B(logits_BHW, targets_BHW))


def hard_dice_B(logits_BHW: jax.Array, targets_BHW: jax.Array) -> jax.Array:
  """Each image's Dice of the mask logit > 0 against target > 0.5 (1 where both are empty)."""
  predicted, target = logits_BHW > 0, targets_BHW > 0.5
  overlap_B = jnp.sum(predicted & target, axis=(1, 2))
  total_B = jnp.sum(predicted, axis=(1, 2)) + jnp.sum(target, axis=(1, 2))
  return jnp.where(total_B > 0, 2.0 * overlap_B / jnp.maximum(total_B, 1), 1.0)


@flax.struct.dataclass
class SegMetrics(clu_metrics.Collection):
  """Per-step training metrics of the U-Net."""

  loss: clu_metrics.Average.from_output('loss')
  dice: clu_metrics.Average.from_output('dice')


def unet_loss(model: UNet, augment: AugmentSettings | None, dice_weight: float) -> steps.LossFn:
  """The U-Net's steps.LossFn: dice_ce_loss of a batch {'image': B x S x S uint8, 'mask': B x S x S float},
  augmented (augment_pair) with the step's key; metrics SegMetrics (loss, hard Dice)."""

  def loss_fn(params, model_state, batch, key):
    inputs_BSS, targets_BSS = batch['image'], batch['mask']
    if augment is not None:
      inputs_BSS, targets_BSS = augment_pair(inputs_BSS, targets_BSS, key, augment)
    logits_BSS = model.apply({'params': params}, inputs_BSS[..., None], train=True)
    loss = dice_ce_loss(logits_BSS, targets_BSS, dice_weight)
    dice_B = hard_dice_B(logits_BSS, targets_BSS)
    return loss, (SegMetrics.single_from_model_output(loss=loss, dice=dice_B), model_state)

  return loss_fn


def train_step(state: steps.TrainState, batch: dict[str, jax.Array], *, model: UNet,
               tx: optax.GradientTransformation, augment: AugmentSettings | None,
               dice_weight: float) -> tuple[steps.TrainState, SegMetrics]:
  """One Adam step on unet_loss (unjitted; training uses steps.make_train_step on it)."""
  return steps.optimizer_step(state, batch, loss_fn=unet_loss(model, augment, dice_weight), tx=tx)


def eval_logits(params: Any, inputs_BSS: jax.Array, *, model: UNet) -> jax.Array:
  """The U-Net's logits of uint8 model inputs."""
  return model.apply({'params': params}, inputs_BSS[..., None], train=False)


# --- The grain pipeline and the loop. ---

@dataclasses.dataclass(frozen=True, eq=False)
class GatherPairs:
  """A batch of indices → {'image': uint8 B x S x S, 'mask': float32 B x S x S}."""

  inputs_NSS: np.ndarray
  targets_NSS: np.ndarray

  def __call__(self, indices_B: np.ndarray) -> dict[str, np.ndarray]:
    return {'image': self.inputs_NSS[indices_B], 'mask': self.targets_NSS[indices_B]}


def train_dataset(films: MaskedFilms, batch_size: int, num_epochs: int, seed: int) -> grain.MapDataset:
  """num_epochs x (n // batch) batches, reshuffled each epoch (seeded), the remainder dropped."""
  if len(films) < batch_size:
    raise ValueError(f'{len(films)} training films are fewer than one batch of {batch_size}: lower '
                     'config.train.batch_size')
  dataset = grain.MapDataset.range(len(films)).shuffle(seed=seed).batch(batch_size, drop_remainder=True)
  return dataset.map(GatherPairs(films.inputs_NSS, films.targets_NSS)).repeat(num_epochs)


def model_of(config: ml_collections.ConfigDict) -> UNet:
  """The U-Net config.model describes (name 'unet')."""
  return UNet(num_classes=1, features=tuple(config.model.features), downsample=config.model.downsample,
              dtype=config.model.dtype)


def validation_metrics(logits_fn: Any, params: Any, films: MaskedFilms, batch_size: int,
                       dice_weight: float) -> dict[str, float]:
  """val_dice (hard masks at the model's side), val_loss over the validation films."""
  dices, losses = [], []
  for start in range(0, len(films), batch_size):
    inputs = films.inputs_NSS[start:start + batch_size]
    targets = films.targets_NSS[start:start + batch_size]
    logits = logits_fn(params, inputs)
    dices.append(np.asarray(hard_dice_B(logits, targets)))
    losses.append(float(dice_ce_loss(logits, jnp.asarray(targets), dice_weight)) * len(inputs))
  return {'val_dice': float(np.concatenate(dices).mean()), 'val_loss': float(sum(losses) / len(films))}


def _digest(films: MaskedFilms) -> dict[str, Any]:
  digest = hashlib.sha256()
  for name, inputs, targets in zip(films.files, films.inputs_NSS, films.targets_NSS):
    digest.update(name.encode())
    digest.update(hashlib.sha256(inputs.tobytes() + targets.tobytes()).digest())
  return {'n': len(films), 'sha256': digest.hexdigest()}


def run_fingerprint(config: ml_collections.ConfigDict, train: MaskedFilms, val: MaskedFilms) -> dict[str, Any]:
  """What a resumed U-Net run must share with its checkpoint ('run') and what only changes bits ('host')."""
  return {'run': {'task': 'lungs', 'model': config.model.to_dict(), 'seed': config.seed,
                  'batch_size': config.train.batch_size, 'image_size': config.data.image_size,
                  'optimizer': {k: config.train[k] for k in ('learning_rate', 'lr_schedule', 'adam_b1', 'adam_b2',
                                                             'adam_eps')},
                  'lungs': config.lungs.to_dict(), 'train_files': _digest(train), 'val_files': _digest(val),
                  'process_count': jax.process_count()},
          'host': {'cpu_count': fingerprint_lib.cpu_count(), 'device_count': jax.device_count(),
                   'platform': jax.devices()[0].platform}}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the lung U-Net on config.lungs.metadata's masked films, resuming workdir's checkpoints; writes
  config.json, split.json, checkpoints/, event files and summary.json (the best step's validation and test Dice at
  the model's side). One device (the U-Net is small)."""
  with workdir_lib.owned(workdir), preemption.StopRequest() as stop:
    os.makedirs(workdir, exist_ok=True)
    size = config.data.image_size
    films, skipped = load_masked_films(config.lungs.metadata, size, config.lungs.limit)
    split = patient_split(films.patients, config.lungs.test_fraction, config.data.val_fraction,
                          config.data.split_seed)
    train, val, test = (films.subset(split[k]) for k in ('train', 'val', 'test'))
    logging.info('lung films: %d train, %d val, %d test (%d patients), %d unreadable', len(train), len(val),
                 len(test), len(set(films.patients)), len(skipped))
    steps_per_epoch = len(train) // config.train.batch_size
    num_steps = steps_per_epoch * config.train.num_epochs
    dataset = train_dataset(train, config.train.batch_size, config.train.num_epochs, config.seed)
    data_iter = iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)))

    model = model_of(config)
    tx = steps.create_optimizer(config.train, num_steps)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
    abstract = steps.abstract_train_state(model, tx, size, mesh)
    manager = checkpoints.create_manager(workdir, config.checkpoint)
    fingerprint = run_fingerprint(config, train, val)
    manager, restored = checkpoints.resume(manager, workdir, config.checkpoint, abstract, data_iter, fingerprint)
    if restored is not None:
      state, history = restored.state, list(restored.history['epochs'])
      logging.info('resumed from %s at step %d', checkpoints.checkpoint_dir(workdir), restored.step)
    else:
      state = steps.jit_create_train_state(model, tx, size, mesh)(jax.random.PRNGKey(config.seed))
      history = []
    if jax.process_index() == 0:
      workdir_lib.write_atomic(os.path.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))
      workdir_lib.write_atomic(os.path.join(workdir, SPLIT_FILE), json.dumps(
          {'metadata': os.path.abspath(config.lungs.metadata), 'skipped': skipped,
           **{k: [films.files[i] for i in split[k]] for k in split}}, indent=1))
    writer = event_writer.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    logging.info('lung U-Net: %d parameters; %d steps (%d epochs x %d)', n_params, num_steps,
                 config.train.num_epochs, steps_per_epoch)
    train_step = steps.make_train_step(unet_loss(model, augment_settings(config), config.lungs.dice_weight), tx,
                                       mesh)
    logits_fn = jax.jit(functools.partial(eval_logits, model=model))
    start_time = time.perf_counter()

    def end_epoch(state: steps.TrainState, step: int, train_row: dict[str, float]) -> dict[str, float] | None:
      row = {'epoch': step // steps_per_epoch, 'step': step, **train_row}
      val_metrics = validation_metrics(logits_fn, state.params, val, config.eval.batch_size,
                                       config.lungs.dice_weight) if len(val) else {}
      row.update(val_metrics)
      row['wall_s'] = round(time.perf_counter() - start_time, 2)
      history.append(row)
      writer.write_scalars(step, {k: v for k, v in row.items() if k.startswith(('train_', 'val_'))})
      logging.info('epoch %d: %s', row['epoch'], ', '.join(f'{k} {v:.4f}' for k, v in row.items()
                                                           if k.startswith(('train_', 'val_'))))
      return val_metrics or None

    def save(state: steps.TrainState, metrics: dict[str, float] | None) -> None:
      checkpoints.save(manager, state, data_iter, history, metrics, fingerprint)

    state = fit_lib.fit(state, data_iter, manager, stop, train_step=train_step,
                        batch_sharding=mesh_lib.batch_sharded(mesh),
                        num_steps=num_steps, steps_per_epoch=steps_per_epoch, save=save, end_epoch=end_epoch,
                        log_every_steps=config.train.log_every_steps, writer=writer, what='lung U-Net')
    writer.flush()
    best_step = (manager.best_step() if len(val) else None) or manager.latest_step()
    best = checkpoints.restore_state(manager, best_step, abstract)
    manager.close()
    summary = {'config': config.name, 'model': 'unet', 'n_params': n_params, 'best_step': best_step,
               'best_metric': config.checkpoint.best_metric, 'num_steps': num_steps,
               'n_train': len(train), 'n_val': len(val), 'n_test': len(test), 'skipped': skipped,
               'train_seconds_this_run': round(time.perf_counter() - start_time, 2), 'history': history}
    for name, part in (('val', val), ('test', test)):
      if len(part):
        summary[f'{name}_dice_at_{size}px'] = validation_metrics(logits_fn, best.params, part, config.eval.batch_size,
                                                                 config.lungs.dice_weight)['val_dice']
    if jax.process_index() == 0:
      workdir_lib.write_atomic(os.path.join(workdir, 'summary.json'), json.dumps(summary, indent=1))
    return summary


def restore_params(workdir: str, step: int = -1) -> tuple[Any, ml_collections.ConfigDict, int]:
  """The float32 params of a lung workdir's best (or given) step, its config and the step (verified restore)."""
  config = checkpoints.load_run_config(workdir)
  model = model_of(config)
  tx = steps.create_optimizer(config.train, 1)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
  abstract = steps.abstract_train_state(model, tx, config.data.image_size, mesh)
  manager = checkpoints.create_manager(workdir, config.checkpoint, read_only=True)
  try:
    restored = checkpoints.restore_chosen(manager, abstract, workdir, requested=step)
  finally:
    manager.close()
  return restored.state.params, config, restored.step


def export_weights(workdir: str, path: str, dtype: str = 'float16') -> dict[str, Any]:
  """Writes the best step's params as `dtype` with their U-Net fields and provenance to `path` (lungs.save_weights);
  returns the meta."""
  params, config, step = restore_params(workdir)
  meta = {'features': list(config.model.features), 'downsample': int(config.model.downsample),
          'size': int(config.data.image_size), 'dtype': dtype, 'step': int(step), 'config': config.name,
          'preprocess': 'grey = channel mean; area-averaged to size x size; mask = logit > 0 upsampled bilinearly'}
  lungs_lib.save_weights(path, params, meta, dtype)
  return meta


if __name__ == '__main__':
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description='Export a lung workdir\'s best checkpoint as shipped weights.')
  parser.add_argument('command', choices=['export'])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--out', default=lungs_lib.WEIGHTS_PATH)
  parser.add_argument('--dtype', default='float16', choices=['float16', 'float32'])
  args = parser.parse_args()
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  print(json.dumps(export_weights(args.workdir, args.out, args.dtype), indent=1))
  print(f'wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)')
