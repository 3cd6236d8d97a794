"""The recipe for sources a model never saw (issue 23; provisional, see the packaged file's docstring).

  python -m lungjax.main --config=configs/robust.py --config.data.root=KAGGLE \\
    --config.data.extra_sources="('radiography=RADIOGRAPHY;COVID=Covid,Normal=Normal','cohen=COHEN/images;COVID-19=Covid,No Finding=Normal')"

The config lives in the package (lungjax/configs/robust.py, `lungjax train --config=robust` once installed);
this file re-exports it so that a checkout's paths and `from configs import ...` keep working.
"""

from lungjax.configs.robust import get_config  # noqa: F401  # pylint: disable=unused-import
