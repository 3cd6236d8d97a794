"""The lung U-Net's loss, joint augmentation, split, shipped-weights format, API and `lungjax segment` tool."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from lungjax import lungs, segmentation
from lungjax.models.unet import UNet
from lungjax.tools import segment as segment_tool

SIZE = 64


def _tiny_model(seed=0):
  module = UNet(features=(4, 8), downsample=2)
  params = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, SIZE, SIZE, 1), jnp.uint8))['params']
  return lungs.LungModel(module, params, SIZE, {})


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


def test_model_input_is_channel_mean_so_rgb_and_grey_give_the_same_mask():
  rng = np.random.default_rng(0)
  grey = rng.integers(0, 256, (50, 70), dtype=np.uint8)
  rgb = np.repeat(grey[..., None], 3, axis=-1)
  np.testing.assert_array_equal(lungs.model_input(grey, SIZE), lungs.model_input(rgb, SIZE))
  model = _tiny_model()
  np.testing.assert_array_equal(model.masks([grey])[0], model.masks([rgb])[0])
  assert model.masks([grey])[0].shape == (50, 70)


def test_float16_weights_round_trip_and_give_the_same_masks(tmp_path):
  model = _tiny_model(1)
  path = str(tmp_path / 'w.npz')
  lungs.save_weights(path, model.params, {'features': [4, 8], 'downsample': 2, 'size': SIZE})
  loaded = lungs.load_lungs(path)
  assert loaded.size == SIZE and loaded.module.features == (4, 8)
  for leaf in jax.tree.leaves(loaded.params):
    assert leaf.dtype == jnp.float32
  films = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
  a, b = model.logits(np.stack([lungs.model_input(f, SIZE) for f in films])), loaded.logits(
      np.stack([lungs.model_input(f, SIZE) for f in films]))
  np.testing.assert_allclose(a, b, atol=0.05)
  masks = lungs.lung_masks(films, loaded)
  assert masks.shape == (3, SIZE, SIZE) and masks.dtype == bool


def test_lung_masks_batches_like_one_at_a_time():
  model = _tiny_model(2)
  films = np.random.default_rng(1).integers(0, 256, (11, 40, 48, 3), dtype=np.uint8)  # More than one batch.
  together = lungs.lung_masks(films, model)
  for film, mask in zip(films, together):
    np.testing.assert_array_equal(model.masks([film])[0], mask)


def test_dice_and_iou():
  a = np.zeros((4, 4), bool)
  a[:2] = True
  b = np.zeros((4, 4), bool)
  b[1:3] = True
  assert lungs.dice(a, b) == pytest.approx(0.5)
  assert lungs.iou(a, b) == pytest.approx(1 / 3)


def _weights(tmp_path, seed=3):
  model = _tiny_model(seed)
  path = str(tmp_path / 'w.npz')
  lungs.save_weights(path, model.params, {'features': [4, 8], 'downsample': 2, 'size': SIZE})
  return path


def test_segment_tool_writes_mirrored_masks_equal_to_the_python_call(tmp_path):
  weights = _weights(tmp_path)
  folder = tmp_path / 'films'
  (folder / 'sub').mkdir(parents=True)
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (70, 60), dtype=np.uint8)).save(folder / 'a.png')
  Image.fromarray(rng.integers(0, 256, (50, 80, 3), dtype=np.uint8)).save(folder / 'sub' / 'b.jpg')
  (folder / 'broken.png').write_bytes(b'not a png')
  out = tmp_path / 'masks'
  assert segment_tool.main([f'--dir={folder}', f'--out={out}', f'--weights={weights}']) == 1  # One unreadable.
  result = segment_tool.segment_folder(str(folder), str(out), weights)  # Again: its own files may be replaced.
  assert sorted(result['written']) == ['a.png', os.path.join('sub', 'b.png')]
  assert [p for p, _ in result['unreadable']] == ['broken.png']
  model = lungs.load_lungs(weights)
  for name in ('a.png', os.path.join('sub', 'b.jpg')):
    expected = lungs.segment(str(folder / name), model)
    written = np.asarray(Image.open(out / (os.path.splitext(name)[0] + '.png'))) > 0
    np.testing.assert_array_equal(written, expected)
  assert not any(p.name.endswith('.tmp') for p in folder.rglob('*'))
  assert sorted(p.name for p in folder.rglob('*')) == ['a.png', 'b.jpg', 'broken.png', 'sub']


def test_segment_tool_refuses_out_inside_dir_and_foreign_files(tmp_path):
  weights = _weights(tmp_path)
  folder = tmp_path / 'films'
  folder.mkdir()
  Image.fromarray(np.zeros((64, 64), np.uint8)).save(folder / 'a.png')
  with pytest.raises(ValueError, match='inside'):
    segment_tool.segment_folder(str(folder), str(folder / 'masks'), weights)
  foreign = tmp_path / 'foreign'
  foreign.mkdir()
  (foreign / 'a.png').write_bytes(b'mine')
  with pytest.raises(FileExistsError):
    segment_tool.segment_folder(str(folder), str(foreign), weights)
  assert (foreign / 'a.png').read_bytes() == b'mine'


def test_one_training_step_lowers_the_loss():
  model = UNet(features=(4, 8), downsample=1)
  import ml_collections  # pylint: disable=g-import-not-at-top
  from lungjax import steps  # pylint: disable=g-import-not-at-top
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


def test_report_bootstrap_and_mask_parts():
  from lungjax.tools import lungs_report  # pylint: disable=g-import-not-at-top
  values = np.array([0.8, 0.9, 1.0, 0.7])
  found = lungs_report.bootstrap_mean(values, 500, 0)
  assert found['mean'] == pytest.approx(0.85) and found['n'] == 4
  assert 0.7 <= found['interval'][0] < 0.85 < found['interval'][1] <= 1.0
  assert lungs_report.bootstrap_mean(np.array([]))['mean'] is None
  mask = np.zeros((100, 100), bool)
  mask[20:80, 10:40] = mask[20:80, 60:90] = True  # Two lungs.
  mask[0, 0] = True  # A speck below 1% of the film: not a part.
  assert lungs_report.mask_parts(mask) == 2
  assert lungs_report.mask_parts(np.zeros((10, 10), bool)) == 0


SHIPPED = os.path.isfile(lungs.WEIGHTS_PATH)


@pytest.mark.skipif(not SHIPPED, reason='the lung weights are not in this checkout')
def test_the_shipped_weights_load_and_are_float16_and_small():
  model = lungs.load_lungs()
  assert model.meta['dtype'] == 'float16' and model.size == 256
  with np.load(lungs.WEIGHTS_PATH) as data:
    assert all(data[k].dtype == np.float16 for k in data.files if k != lungs.META_KEY)
  assert os.path.getsize(lungs.WEIGHTS_PATH) < 5e6
  assert os.path.isfile(os.path.splitext(lungs.WEIGHTS_PATH)[0] + '.md')  # Its model card beside it.
  record = lungs.weights_record()
  assert len(record['sha256']) == 64 and record['features'] == list(model.module.features)
