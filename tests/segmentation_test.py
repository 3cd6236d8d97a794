"""segmentation.py: the lung U-Net's loss, joint augmentation, patient split and train step."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lungjax import segmentation, steps
from lungjax.models.unet import UNet


def test_dice_ce_loss_is_low_for_the_right_mask_and_high_for_the_wrong_one():
  targets = np.zeros((1, 8, 8), np.float32)
  targets[0, 2:6, 2:6] = 1
  right = jnp.asarray(np.where(targets > 0, 10.0, -10.0))
  assert float(segmentation.dice_ce_loss(right, targets)) < 0.05
  assert float(segmentation.dice_ce_loss(-right, targets)) > 1.5
  assert float(segmentation.hard_dice_B(right, targets)[0]) == 1.0
  assert float(segmentation.hard_dice_B(-right, targets)[0]) == 0.0


def test_augment_pair_moves_film_and_mask_together_and_never_flips():
  film = np.zeros((1, 32, 32), np.uint8)
  film[0, 4:12, 2:10] = 255  # A bright block top left; its mask is the same block.
  mask = (film > 0).astype(np.float32)
  settings = segmentation.AugmentSettings(contrast=(1, 1), gamma=(1, 1), brightness=(0, 0))
  for seed in range(5):
    films, masks = segmentation.augment_pair(jnp.asarray(film), jnp.asarray(mask), jax.random.PRNGKey(seed), settings)
    films, masks = np.asarray(films), np.asarray(masks)
    np.testing.assert_allclose(films / 255.0, masks, atol=1e-4)  # Same geometry for both.
    ys, xs = np.nonzero(masks[0] > 0.5)
    assert xs.mean() < 16 and ys.mean() < 16  # Still top left: no flip.


def test_patient_split_keeps_each_patient_on_one_side():
  patients = tuple(str(i // 3) for i in range(60))
  split = segmentation.patient_split(patients, 0.2, 0.15, 0)
  sides = {}
  for name, indices in split.items():
    for i in indices:
      assert sides.setdefault(patients[i], name) == name
  assert sorted(np.concatenate(list(split.values()))) == list(range(60))
  assert len(split['test']) and len(split['val'])


def test_one_training_step_lowers_the_loss():
  model = UNet(features=(4, 8), downsample=1)
  train_config = ml_collections.ConfigDict({'learning_rate': 1e-2, 'lr_schedule': 'constant', 'adam_b1': 0.9,
                                            'adam_b2': 0.999, 'adam_eps': 1e-7})
  tx = steps.create_optimizer(train_config, 10)
  state = steps.create_train_state(model, tx, 16, jax.random.PRNGKey(0))
  films = np.zeros((2, 16, 16), np.uint8)
  films[:, 4:12, 3:8] = 200
  batch = {'image': jnp.asarray(films), 'mask': jnp.asarray((films > 0).astype(np.float32))}
  losses = []
  for _ in range(15):
    state, metrics = segmentation.train_step(state, batch, model=model, tx=tx, augment=None, dice_weight=1.0)
    losses.append(float(metrics.compute()['loss']))
  assert losses[-1] < losses[0] - 0.1
