"""A tiny configuration for tests and CI: 32x32 images, a narrow CNN, 2 epochs.

  python -m lungjax.main --config=configs/tiny.py --config.data.root=DATA

The config lives in the package (lungjax/configs/tiny.py, `lungjax train --config=tiny` once installed);
this file re-exports it so that a checkout's paths and `from configs import ...` keep working.
"""

from lungjax.configs.tiny import get_config  # noqa: F401  # pylint: disable=unused-import
