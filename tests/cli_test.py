"""The `lungjax` command and the packaged configs: --config=NAME, the checkout's configs/*.py, subcommands, help."""

import importlib
import os
import re
import subprocess
import sys

import ml_collections
import pytest

from lungjax import cli, configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGED = ('autoencoder', 'cnn', 'cnn_augment', 'lungs', 'multisource', 'resnet', 'robust', 'tiny', 'vgg')
# Modules with a __main__ that are developer tools, not user commands (benchmarks, fault injection, a preview).
DEVELOPER_TOOLS = {'lungjax.bench', 'lungjax.faults', 'lungjax.scale_check', 'lungjax.data.augment',
                   'lungjax.tools.lungs_report'}


def _cli(*args, cwd=REPO):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': REPO}
  return subprocess.run([sys.executable, '-m', 'lungjax.cli', *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=600, check=False)


def test_packaged_configs_are_the_checkouts_configs():
  assert configs.names() == list(PACKAGED)
  for name in PACKAGED:
    packaged = importlib.import_module(f'lungjax.configs.{name}')
    checkout = importlib.import_module(f'configs.{name}')
    assert checkout.get_config is packaged.get_config
    config = packaged.get_config()
    assert isinstance(config, ml_collections.ConfigDict) and config.name == name
    # Each checkout file shows the command that runs it, and the packaged one the installed command.
    assert f'python -m lungjax.main --config=configs/{name}.py' in checkout.__doc__
    assert f'lungjax train --config={name}' in packaged.__doc__


def test_variants_start_from_the_packaged_cnn():
  from lungjax.configs import cnn, tiny  # pylint: disable=g-import-not-at-top
  assert tiny.get_config().eval.caveat == cnn.get_config().eval.caveat
  assert tiny.get_config().data.image_size == 32 and cnn.get_config().data.image_size == 256


def test_resolve_names_paths_and_config_arguments(tmp_path):
  assert configs.resolve('cnn') == os.path.join(configs.CONFIG_DIR, 'cnn.py')
  assert os.path.isfile(configs.resolve('tiny'))
  checkout_file = os.path.join(REPO, 'configs', 'cnn.py')
  assert configs.resolve(checkout_file) == checkout_file
  own = tmp_path / 'mine.py'
  own.write_text('')
  assert configs.resolve(str(own)) == str(own)
  assert configs.resolve(f'{own}:arg') == f'{own}:arg'
  assert configs.resolve('tiny:arg') == os.path.join(configs.CONFIG_DIR, 'tiny.py') + ':arg'
  cwd = os.getcwd()
  os.chdir(tmp_path)
  try:
    (tmp_path / 'cnn').write_text('')  # A file named like a packaged config wins: a path is a path.
    assert configs.resolve('cnn') == 'cnn'
  finally:
    os.chdir(cwd)
  with pytest.raises(ValueError, match=r'--config=nope: no such file.*cnn, cnn_augment'):
    configs.resolve('nope')


def test_resolve_argv_rewrites_only_the_config_flag():
  tiny = os.path.join(configs.CONFIG_DIR, 'tiny.py')
  argv = ['prog', '--config=tiny', '--config.data.root=cnn', '--workdir=cnn', '-config', 'cnn', '--', '--config=x']
  assert configs.resolve_argv(argv) == [
      'prog', f'--config={tiny}', '--config.data.root=cnn', '--workdir=cnn', '-config',
      os.path.join(configs.CONFIG_DIR, 'cnn.py'), '--', '--config=x']
  assert configs.resolve_argv(['prog', '--config']) == ['prog', '--config']  # absl says the value is missing.


def test_commands_cover_every_user_module_with_a_main():
  modules = set()
  packages = ['lungjax'] + [f'lungjax/{entry}' for entry in sorted(os.listdir(os.path.join(REPO, 'lungjax')))
                            if os.path.isfile(os.path.join(REPO, 'lungjax', entry, '__init__.py'))]
  for package in packages:  # Every subpackage: runtime/, explain/, report/, data/, ... as well as tools/.
    for entry in sorted(os.listdir(os.path.join(REPO, package))):
      if entry.endswith('.py'):
        text = open(os.path.join(REPO, package, entry)).read()
        main_guard = re.search(r"^if __name__ == '__main__':", text, re.M)
        if main_guard and ('app.run(' in text or package == 'lungjax/tools'):  # tools/ use argparse.
          modules.add(f'{package.replace("/", ".")}.{entry[:-3]}')
  assert {'lungjax.main', 'lungjax.tools.predict', 'lungjax.tools.audit', 'lungjax.tools.prepare', 'lungjax.tools.compare'} <= modules
  assert modules - DEVELOPER_TOOLS == {command.module for command in cli.COMMANDS.values()}
  assert [name for name, command in cli.COMMANDS.items() if command.module == 'lungjax.main'] == [
      'train', 'eval', 'explain', 'shortcuts']


def test_module_argv_puts_the_mode_first_and_resolves_the_config():
  module, argv = cli.module_argv('eval', ['--config=cnn', '--workdir=W'])
  assert module == 'lungjax.main'
  assert argv == ['lungjax eval', '--mode=eval', f'--config={os.path.join(configs.CONFIG_DIR, "cnn.py")}',
                  '--workdir=W']
  assert cli.module_argv('predict', ['--workdir=W', 'a.png']) == ('lungjax.tools.predict', ['lungjax predict',
                                                                                     '--workdir=W', 'a.png'])
  with pytest.raises(ValueError, match='sets --mode itself'):
    cli.module_argv('train', ['--mode=eval'])


def test_mode_commands_without_a_config_get_cnn_and_train_does_not():
  """`lungjax eval --workdir=W --config.eval.dir=D` (issue 25's command) works: the model comes from W/config.json."""
  cnn = os.path.join(configs.CONFIG_DIR, 'cnn.py')
  for name in ('eval', 'explain', 'shortcuts'):
    _, argv = cli.module_argv(name, ['--workdir=W', '--config.eval.dir=D'])
    assert argv == [f'lungjax {name}', f'--mode={name}', f'--config={cnn}', '--workdir=W', '--config.eval.dir=D']
    _, argv = cli.module_argv(name, ['--workdir=W', '--config', 'tiny'])  # A given --config wins, either spelling.
    assert [arg for arg in argv if arg.startswith('--config')] == ['--config']
  _, argv = cli.module_argv('train', ['--workdir=W'])  # Training needs its config named.
  assert not any(arg.startswith('--config') for arg in argv)
  with pytest.raises(ValueError, match='unknown command'):
    cli.module_argv('fit', [])


def test_help_lists_every_command_in_one_screen(capsys):
  assert cli.main(['lungjax', '--help']) == 0
  text = capsys.readouterr().out
  lines = text.splitlines()
  assert len(lines) <= 30 and max(map(len, lines)) <= 120
  for name in cli.COMMANDS:
    assert re.search(rf'^  {name} +\S', text, re.M), name
  for name in PACKAGED:
    assert name in text
  assert cli.main(['lungjax']) == 2  # No command: the same help, and a usage status.


def test_unknown_command_bad_config_and_mode_fail_before_any_import():
  unknown = _cli('fit')
  assert unknown.returncode == 2 and "unknown command 'fit'" in unknown.stderr and 'commands:' in unknown.stderr
  bad = _cli('train', '--config=nope')
  assert bad.returncode == 2 and 'not a packaged config' in bad.stderr and 'tiny' in bad.stderr
  mode = _cli('train', '--mode=eval', '--config=tiny')
  assert mode.returncode == 2 and 'sets --mode itself' in mode.stderr


def test_subcommand_help_shows_that_modules_flags():
  train = _cli('train', '--help')
  assert train.returncode in (0, 1), train.stderr[-2000:]  # absl's --help exits 1, as python -m lungjax.main does.
  assert '--workdir' in train.stdout and '--mode' in train.stdout and '--config' in train.stdout
  predict = _cli('predict', '--help')
  assert predict.returncode in (0, 1), predict.stderr[-2000:]
  assert '--gradcam_dir' in predict.stdout and '--mode' not in predict.stdout


def test_main_accepts_a_packaged_config_name(tmp_path):
  """python -m lungjax.main --config=NAME loads the packaged config (the run goes on to look for its data); an
  unknown name is refused before absl parses the flags, naming the packaged configs."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': REPO}

  def main(*args):
    return subprocess.run([sys.executable, '-m', 'lungjax.main', *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600, check=False)

  absent = tmp_path / 'absent'
  run = main('--config=tiny', f'--config.data.root={absent}', f'--workdir={tmp_path / "w"}')
  assert run.returncode == 1 and f"config.data.root='{absent}' does not exist" in run.stderr, run.stderr[-2000:]
  run = main('--config=tinyy')
  assert run.returncode == 1 and '--config=tinyy: no such file, and not a packaged config' in run.stderr
