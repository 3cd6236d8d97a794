"""Decode a data root once into TFDS array_record files that training reads instead of the image files.

python -m lungjax.tools.prepare --config=configs/cnn.py [--config.data.root=DATA] --config.data.prepared_dir=DIR

Then train from them with the same config and `--config.data.prepared_dir=DIR`. Without --config.data.root the
Kaggle dataset is prepared (kagglehub cache, else TFDS' Kaggle download, which needs the `kaggle` CLI, credentials
and a network; without them it stops at once and says what to do).
"""

import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

from lungjax.data import prepared, sources  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defines the command's flags, only when run as a command (every module shares absl's flag registry)."""
  config_flags.DEFINE_config_file('config', None, 'A configs/*.py file; its config.data fields say what to prepare.',
                                  lock_config=True)
  flags.mark_flags_as_required(['config'])


def main(argv):
  del argv
  summary = prepared.prepare(FLAGS.config)
  print(json.dumps(summary, indent=2))
  extras = sources.extra_sources(FLAGS.config)
  if extras:
    print(f'\nprepared the main source only: the extra sources {[s.name for s in extras]} are decoded from their '
          'folders each run, and joined with it (data/sources.JoinedImages)')
  print(f'\ntrain from it: python -m lungjax.main --config=... --config.data.prepared_dir='
        f'{FLAGS.config.data.prepared_dir} (with the same data fields)')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
