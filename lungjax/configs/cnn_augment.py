"""The study's CNN and recipe with on-device augmentation of training batches (issue 3).

lungjax train --config=cnn_augment --config.data.root=DATA
(in a checkout: python -m lungjax.main --config=configs/cnn_augment.py --config.data.root=DATA)
"""

import ml_collections

from lungjax.configs import cnn


def get_config() -> ml_collections.ConfigDict:
  """Returns the cnn config with augmentation on: small rotations, zooms, shifts, exposure and contrast changes."""
  config = cnn.get_config()
  config.name = 'cnn_augment'
  config.augment.enabled = True
  # Ranges a real chest film varies by (positioning, distance, exposure); no flips: the heart sits on the left.
  config.augment.rotation_prob = 0.5
  config.augment.rotation_degrees = (-10.0, 10.0)
  config.augment.zoom_prob = 0.5
  config.augment.zoom_range = (0.9, 1.1)
  config.augment.shift_prob = 0.5
  config.augment.shift_fraction = (-0.08, 0.08)
  config.augment.hflip_prob = 0.0
  config.augment.brightness_prob = 0.5
  config.augment.brightness_delta = (-0.1, 0.1)
  config.augment.contrast_prob = 0.5
  config.augment.contrast_range = (0.85, 1.15)
  return config
