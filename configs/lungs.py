"""The lung U-Net's config (lungjax/configs/lungs.py); re-exported so a checkout's --config=configs/lungs.py works.

  python -m lungjax.main --config=configs/lungs.py --mode=train --workdir=W
"""

from lungjax.configs.lungs import get_config  # noqa: F401  # pylint: disable=unused-import
