"""A tiny configuration for tests and CI: 32x32 images, a narrow CNN, 2 epochs.

lungjax train --config=tiny --config.data.root=DATA --workdir=W
(in a checkout: python -m lungjax.main --config=configs/tiny.py --config.data.root=DATA --workdir=W)
"""

import ml_collections

from lungjax.configs import cnn


def get_config() -> ml_collections.ConfigDict:
  """Returns the study's configuration shrunk to run in seconds on a CPU."""
  config = cnn.get_config()
  config.name = 'tiny'
  config.data.image_size = 32
  config.data.val_fraction = 0.25
  config.model.conv_features = (4, 8, 8)
  config.model.dense_features = (16, 16)
  config.train.num_epochs = 2
  config.train.batch_size = 4
  config.train.log_every_steps = 2
  config.eval.batch_size = 4
  config.eval.n_bootstrap = 200
  return config
