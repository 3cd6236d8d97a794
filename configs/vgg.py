"""VGG-16 from scratch on the study's data: 256x256, batch 16, Adam 1e-4.

  python -m lungjax.main --config=configs/vgg.py --config.data.root=DATA

The config lives in the package (lungjax/configs/vgg.py, `lungjax train --config=vgg` once installed);
this file re-exports it so that a checkout's paths and `from configs import ...` keep working.
"""

from lungjax.configs.vgg import get_config  # noqa: F401  # pylint: disable=unused-import
