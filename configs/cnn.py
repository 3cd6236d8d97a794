"""The study's CNN and recipe: 256x256 RGB, rescale 1/255, class weights, Adam 1e-3, 10 epochs, batch 16.

  python -m lungjax.main --config=configs/cnn.py --config.data.root=DATA

The config lives in the package (lungjax/configs/cnn.py, `lungjax train --config=cnn` once installed);
this file re-exports it so that a checkout's paths and `from configs import ...` keep working.
"""

from lungjax.configs.cnn import get_config  # noqa: F401  # pylint: disable=unused-import
