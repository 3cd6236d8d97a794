"""Optional dependencies: the check that names the extra to install when one of its modules does not import.

Below every data module: loading.py, prepared.py and tfds_builders.py (and config_check, through loading) all ask it.
"""

from __future__ import annotations

import importlib

# The [prepare] extra (pyproject.toml): prepared data (config.data.prepared_dir, `lungjax prepare`) reads and writes
# TFDS array_record files; tensorflow-datasets brings pyarrow. Only lungjax/data/prepared.py and tfds_builders.py
# import them, after require_prepare_extra.
PREPARE_EXTRA_MODULES = ('tensorflow_datasets', 'array_record')


def require_prepare_extra(what: str) -> None:
  """Raises ModuleNotFoundError naming `what` and the [prepare] extra when one of its modules does not import."""
  missing = []
  for name in PREPARE_EXTRA_MODULES:
    try:
      importlib.import_module(name)
    except ImportError:
      missing.append(name)
  if missing:
    raise ModuleNotFoundError(f"{what} needs the [prepare] extra (tensorflow-datasets, array_record), which is not "
                              f"installed ({', '.join(missing)} missing): pip install 'lungjax[prepare]'")
