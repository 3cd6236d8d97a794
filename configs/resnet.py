"""ResNet-18 from scratch on the study's data: 256x256, batch 16, the CNN's recipe otherwise.

  python -m lungjax.main --config=configs/resnet.py --config.data.root=DATA

The config lives in the package (lungjax/configs/resnet.py, `lungjax train --config=resnet` once installed);
this file re-exports it so that a checkout's paths and `from configs import ...` keep working.
"""

from lungjax.configs.resnet import get_config  # noqa: F401  # pylint: disable=unused-import
