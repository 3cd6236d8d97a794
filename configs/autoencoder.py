"""The study's autoencoder variant: pretrain the CNN's conv stack on reconstruction, then train its head.

  python -m lungjax.main --config=configs/autoencoder.py --config.data.root=DATA

The config lives in the package (lungjax/configs/autoencoder.py, `lungjax train --config=autoencoder` once installed);
this file re-exports it so that a checkout's paths and `from configs import ...` keep working.
"""

from lungjax.configs.autoencoder import get_config  # noqa: F401  # pylint: disable=unused-import
