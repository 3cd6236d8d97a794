"""The study's CNN trained on two sources: the Kaggle train split plus an extra labelled folder.

  python -m lungjax.main --config=configs/multisource.py --config.data.root=DATA \\
    --config.data.extra_root=../shared/data/covid19-radiography-sample \\
    --config.data.extra_class_names='COVID=Covid,Normal=Normal'

The config lives in the package (lungjax/configs/multisource.py, `lungjax train --config=multisource` once installed);
this file re-exports it so that a checkout's paths and `from configs import ...` keep working.
"""

from lungjax.configs.multisource import get_config  # noqa: F401  # pylint: disable=unused-import
