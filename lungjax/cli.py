"""The `lungjax` command: `lungjax COMMAND [FLAGS] [ARGS]` runs the module behind COMMAND with the same flags.

lungjax train --config=cnn --config.data.root=DATA --workdir=W   is   python -m lungjax.main --mode=train ...
lungjax predict --workdir=W FILES                                 is   python -m lungjax.tools.predict --workdir=W FILES

`--config` names a packaged config (lungjax/configs/NAME.py) or a config file. Each command's module runs as
`python -m` runs it (its flags, its exit status); `lungjax COMMAND --help` prints that module's flags.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import runpy
import sys
from collections.abc import Sequence

from lungjax import configs


@dataclasses.dataclass(frozen=True)
class Command:
  """A subcommand: the module it runs as __main__, flags put before the user's, and one line of help."""
  module: str
  summary: str
  fixed_flags: tuple[str, ...] = ()
  # The --config used when none is given. eval, explain and shortcuts rebuild the model from the workdir's
  # config.json (checkpoints.run_config_for_inference: every field not set on the command line comes from there),
  # so `lungjax eval --workdir=W --config.eval.dir=D` needs no --config.
  default_config: str = ''


COMMANDS: dict[str, Command] = {
    'train': Command('lungjax.main', 'train and evaluate a model in --workdir (resumes it)', ('--mode=train',)),
    'eval': Command('lungjax.main', "evaluate a workdir's checkpoint on --config.eval.dir", ('--mode=eval',),
                    'cnn'),
    'explain': Command('lungjax.main', 'Grad-CAM overlays and a gallery of --config.explain.dir', ('--mode=explain',),
                       'cnn'),
    'shortcuts': Command('lungjax.main', 'does the model need the lungs? scores with them hidden / shown alone',
                         ('--mode=shortcuts',), 'cnn'),
    'predict': Command('lungjax.tools.predict', 'classify image files and folders with a trained --workdir (JSON lines)'),
    'audit': Command('lungjax.tools.audit', 'copies, leaks, unreadable files and identifying metadata in image folders'),
    'prepare': Command('lungjax.tools.prepare', 'decode a data root once into array_record files that training reads'),
    'segment': Command('lungjax.tools.segment', 'lung masks (PNG) of every image of --dir, written under --out'),
    'compare': Command('lungjax.tools.compare', 'two trained workdirs on the same images: paired differences, McNemar'),
}

EXAMPLES = """\
examples:
  lungjax train --config=cnn --config.data.root=DATA --workdir=W
  lungjax eval --workdir=W --config.eval.dir=FOLDER   (model and settings: W/config.json)
  lungjax predict --workdir=W image.png folder/
  lungjax compare W_A W_B --dir=FOLDER"""


def version() -> str:
  """The installed distribution's version ('unknown' from a checkout that was never installed)."""
  try:
    return importlib.metadata.version('lungjax')
  except importlib.metadata.PackageNotFoundError:
    return 'unknown'


def usage() -> str:
  """The one-screen help of `lungjax --help`: the commands, the packaged configs, examples."""
  width = max(len(name) for name in COMMANDS)
  lines = ['usage: lungjax COMMAND [FLAGS] [ARGS]   (lungjax COMMAND --help: its flags)', '',
           'Chest X-ray classifiers in JAX: train, evaluate and explain them, classify new images.', '', 'commands:']
  lines += [f'  {name:<{width}}  {command.summary}' for name, command in COMMANDS.items()]
  lines += ['', f'--config names a packaged config ({", ".join(configs.names())}),', 'or a config file;',
            'override its fields with --config.FIELD=VALUE (e.g. --config.train.num_epochs=3).', '', EXAMPLES]
  return '\n'.join(lines)


def module_argv(name: str, args: Sequence[str]) -> tuple[str, list[str]]:
  """The module that `lungjax NAME ARGS` runs and the sys.argv it runs with (argv[0] is replaced by runpy).

  eval, explain and shortcuts without a --config get --config=cnn (their model comes from the workdir's config.json).
  Raises ValueError for an unknown command, a --mode given to a mode command, or a --config that names nothing.
  """
  if name not in COMMANDS:
    raise ValueError(f'unknown command {name!r}; the commands are: {", ".join(COMMANDS)}')
  command = COMMANDS[name]
  if command.fixed_flags and any(arg.lstrip('-').partition('=')[0] == 'mode' for arg in args if arg.startswith('-')):
    raise ValueError(f'`lungjax {name}` sets --mode itself; use `lungjax eval`, `lungjax explain`, ...')
  given_config = any(arg.lstrip('-').partition('=')[0] == 'config' for arg in args if arg.startswith('-'))
  default = (f'--config={command.default_config}',) if command.default_config and not given_config else ()
  return command.module, configs.resolve_argv([f'lungjax {name}', *command.fixed_flags, *default, *args])


def main(argv: Sequence[str] | None = None) -> int:
  """Runs `lungjax COMMAND ...` (argv: sys.argv by default) and returns, or exits with, the command's status."""
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help', 'help', '-help', '--helpshort'):
    print(usage())
    return 0 if len(argv) >= 2 else 2
  if argv[1] in ('--version', '-V'):
    print(f'lungjax {version()}')
    return 0
  try:
    module, module_args = module_argv(argv[1], argv[2:])
  except ValueError as error:
    print(f'lungjax: {error}\n\n{usage()}' if argv[1] not in COMMANDS else f'lungjax: {error}', file=sys.stderr)
    return 2
  sys.argv = module_args
  runpy.run_module(module, run_name='__main__', alter_sys=True)  # absl's app.run ends it with sys.exit(status).
  return 0


if __name__ == '__main__':
  sys.exit(main())
