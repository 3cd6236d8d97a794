"""The packaged configs: `--config=cnn` names lungjax/configs/cnn.py; a path to a config file works as well.

Each module's get_config() returns an ml_collections.ConfigDict; the variants (tiny, resnet, ...) start from cnn's.
A checkout's configs/*.py re-export these, so `--config=configs/cnn.py` and `from configs import tiny` still work.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
  """The packaged configs' names (their module names: 'autoencoder', 'cnn', ...), sorted."""
  return sorted(entry[:-3] for entry in os.listdir(CONFIG_DIR) if entry.endswith('.py') and not entry.startswith('_'))


def resolve(value: str) -> str:
  """The config file that --config=VALUE means: VALUE itself if it is a file, else the packaged config it names.

  A config argument after a colon (config_flags' `path:arg`) is kept. Raises ValueError naming the value and the
  packaged configs when it is neither.
  """
  path, colon, argument = value.partition(':')
  if os.path.isfile(path):
    return value
  known = names()
  if path in known:
    return os.path.join(CONFIG_DIR, f'{path}.py') + colon + argument
  raise ValueError(f'--config={value}: no such file, and not a packaged config (one of: {", ".join(known)})')


def resolve_argv(argv: Sequence[str], flag: str = 'config') -> list[str]:
  """argv with the value of each --FLAG=VALUE, -FLAG=VALUE or `--FLAG VALUE` resolved by resolve().

  --FLAG.field=... overrides are left alone, and so is everything after a bare '--'. argv[0] is the program.
  """
  resolved = list(argv[:1])
  index = 1
  while index < len(argv):
    arg = argv[index]
    if arg == '--':
      resolved.extend(argv[index:])
      break
    name, equals, value = arg.lstrip('-').partition('=')
    if arg.startswith('-') and name == flag:
      if equals:
        resolved.append(f'{arg[:len(arg) - len(value) - 1]}={resolve(value)}')
      elif index + 1 < len(argv):
        resolved.extend([arg, resolve(argv[index + 1])])
        index += 1
      else:
        resolved.append(arg)  # A missing value: absl's parser says so.
    else:
      resolved.append(arg)
    index += 1
  return resolved
