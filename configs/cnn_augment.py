"""The study's CNN and recipe with on-device augmentation of training batches.

  python -m lungjax.main --config=configs/cnn_augment.py --config.data.root=DATA

The config lives in the package (lungjax/configs/cnn_augment.py, `lungjax train --config=cnn_augment` once installed);
this file re-exports it so that a checkout's paths and `from configs import ...` keep working.
"""

from lungjax.configs.cnn_augment import get_config  # noqa: F401  # pylint: disable=unused-import
