"""The study's autoencoder variant (issue 3): pretrain the CNN's conv stack on reconstruction, then train its head.

One command runs both stages: python -m lungjax.main --config=configs/autoencoder.py
"""

import ml_collections

from configs import cnn


def get_config() -> ml_collections.ConfigDict:
  """Returns configs/cnn.py with stage 1 on: 10 epochs of reconstruction MSE, then the head on the frozen encoder."""
  config = cnn.get_config()
  config.name = 'autoencoder'
  config.autoencoder.enabled = True
  config.autoencoder.num_epochs = 10
  config.autoencoder.learning_rate = 1e-3
  config.autoencoder.batch_size = 16
  config.autoencoder.extra_dirs = ()
  config.autoencoder.freeze_encoder = True
  return config
