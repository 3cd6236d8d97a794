"""The study's autoencoder variant (issue 3): pretrain the CNN's conv stack on reconstruction, then train its head.

One command runs both stages: lungjax train --config=autoencoder --config.data.root=DATA
(in a checkout: python -m lungjax.main --config=configs/autoencoder.py --config.data.root=DATA)
"""

import ml_collections

from lungjax.configs import cnn


def get_config() -> ml_collections.ConfigDict:
  """Returns the cnn config with stage 1 on: 10 epochs of reconstruction MSE, then the head on the frozen encoder."""
  config = cnn.get_config()
  config.name = 'autoencoder'
  config.autoencoder.enabled = True
  config.autoencoder.num_epochs = 10
  config.autoencoder.learning_rate = 1e-3
  config.autoencoder.batch_size = 16
  config.autoencoder.extra_dirs = ()
  config.autoencoder.freeze_encoder = True
  return config
