"""The lung U-Net (issue 24): 256 px films, Dice + cross-entropy, joint augmentation, a patient-grouped split.

lungjax train --config=lungs --workdir=W
  (from a checkout: python -m lungjax.main --config=configs/lungs.py --mode=train --workdir=W)
  [--config.lungs.metadata=.../cohen-covid-chestxray/metadata.csv]

Trains on the films of config.lungs.metadata that have a `lung_mask` (lungjax/segmentation.py). The fields the
classifier's recipe shares (train.*, checkpoint.*, eval.batch_size) come from cnn's config; config.task='lungs'
sends --mode=train to segmentation.train_and_evaluate. The shipped weights (lungjax/models/weights/) are this
config's best checkpoint, exported by results/lungs/regenerate.sh.
"""

import ml_collections

from lungjax.configs import cnn


def get_config() -> ml_collections.ConfigDict:
  config = cnn.get_config()
  config.name = 'lungs'
  config.task = 'lungs'
  config.data.image_size = 256
  config.data.val_fraction = 0.15  # Of the films left after the test split: the best checkpoint by val_dice.
  config.model = ml_collections.ConfigDict()
  config.model.name = 'unet'
  config.model.features = (16, 32, 64, 128)
  config.model.downsample = 2  # Segments at 128 px inside, upsampled bilinearly to 256.
  config.model.dtype = 'float32'
  config.train.num_epochs = 20
  config.train.batch_size = 8
  config.train.learning_rate = 2e-3
  config.train.lr_schedule = 'cosine'
  config.checkpoint.best_metric = 'dice'
  config.eval.batch_size = 8

  config.lungs = ml_collections.ConfigDict()
  config.lungs.metadata = '../shared/data/cohen-covid-chestxray/metadata.csv'
  config.lungs.test_fraction = 0.2  # Held-out films (patients), never trained on: the report's Dice.
  config.lungs.dice_weight = 1.0  # loss = mean cross-entropy + dice_weight * mean(1 - soft Dice).
  config.lungs.limit = 0  # >0: only the first rows with masks (tests).
  config.lungs.augment = ml_collections.ConfigDict()
  config.lungs.augment.enabled = True
  config.lungs.augment.scale = (0.9, 1.1)
  config.lungs.augment.shift = (-0.08, 0.08)
  config.lungs.augment.rotation_degrees = (-10.0, 10.0)
  config.lungs.augment.contrast = (0.8, 1.25)
  config.lungs.augment.gamma = (0.8, 1.25)
  config.lungs.augment.brightness = (-0.08, 0.08)
  return config
