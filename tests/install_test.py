"""Packaging: the core install needs no TensorFlow or Keras, extras fail clearly when missing, and a regular
(non-editable) install works from any folder: `lungjax --help`, train with a packaged config, predict."""

import glob
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ('tensorflow', 'tensorflow-cpu', 'keras', 'tensorboard', 'h5py', 'kagglehub', 'pydicom', 'scipy-openblas32')
EXTRAS = ('prepare', 'tensorboard', 'keras', 'kaggle', 'dicom', 'cpu', 'cuda', 'tpu', 'test')
PREPARE_ONLY = ('tensorflow-datasets', 'pyarrow', 'array-record')  # The [prepare] extra's (array_record: grain's too).


def _name(requirement: str) -> str:
  """The distribution name of a requirement string ('jax[tpu]>=0.10; ...' → 'jax')."""
  for stop in '[<>=!~; ':
    requirement = requirement.split(stop)[0]
  return requirement.strip().lower().replace('_', '-')


def _project() -> dict:
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)['project']


def test_core_requirements_hold_no_tensorflow_keras_or_extras():
  project = _project()
  core = {_name(r) for r in project['dependencies']}
  assert not core & set(HEAVY + PREPARE_ONLY), core & set(HEAVY + PREPARE_ONLY)
  assert {'jax', 'flax', 'optax', 'orbax-checkpoint', 'grain', 'clu', 'ml-collections', 'absl-py', 'numpy', 'pillow',
          'matplotlib', 'tqdm', 'tensorboardx'} <= core
  assert {_name(r) for r in project['optional-dependencies']['prepare']} == {
      'tensorflow-datasets', 'array-record', 'importlib-resources'}
  assert all('>=' in r for r in project['dependencies'])  # Every requirement states the oldest tested version.
  assert set(EXTRAS) <= set(project['optional-dependencies'])
  assert {_name(r) for r in project['optional-dependencies']['keras']} == {'h5py', 'keras', 'tensorflow-cpu'}
  assert project['scripts'] == {'lungjax': 'lungjax.cli:main'}


def test_tensorflow_datasets_needs_no_tensorflow():
  """The [prepare] extra's TFDS installs without TensorFlow: its own requirements name none."""
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  try:
    requires = importlib.metadata.requires('tensorflow-datasets') or []
  except importlib.metadata.PackageNotFoundError:
    pytest.skip('tensorflow-datasets is not installed')
  unconditional = {_name(r) for r in requires if 'extra ==' not in r}
  assert not unconditional & {'tensorflow', 'tensorflow-cpu', 'keras'}, unconditional


def test_importing_train_does_not_import_tensorflow():
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': REPO}
  code = ("import sys, lungjax.train, lungjax.main, lungjax.tools.predict, lungjax.cli; "
          "heavy = sorted(m for m in ('tensorflow', 'keras', 'tensorboard', 'h5py') if m in sys.modules); "
          "assert not heavy, heavy")
  run = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600, check=False)
  assert run.returncode == 0, run.stderr[-3000:]


_WITHOUT_THE_PREPARE_EXTRA = textwrap.dedent('''
    import importlib, pkgutil, sys
    for name in ('tensorflow_datasets', 'pyarrow'):
      sys.modules[name] = None  # As if the [prepare] extra were not installed (array_record comes with grain).
    import lungjax
    PREPARE_PATH = ('lungjax.data.prepared', 'lungjax.data.tfds_builders', 'lungjax.tools.prepare')
    imported, refused = [], []
    for module in pkgutil.walk_packages(lungjax.__path__, 'lungjax.'):
      try:
        importlib.import_module(module.name)
        imported.append(module.name)
      except ModuleNotFoundError as error:
        assert module.name in PREPARE_PATH, (module.name, error)
        assert "needs the [prepare] extra" in str(error) and "pip install 'lungjax[prepare]'" in str(error), error
        refused.append(module.name)
    assert sorted(refused) == sorted(PREPARE_PATH), refused
    assert len(imported) > 40, imported
    print('ok')
''')


def test_without_the_prepare_extra_every_other_module_imports_and_the_prepare_path_names_it():
  """No module outside the prepare path imports TFDS or pyarrow; the prepare path's import error names the extra."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': REPO}
  run = subprocess.run([sys.executable, '-c', _WITHOUT_THE_PREPARE_EXTRA], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600, check=False)
  assert run.returncode == 0 and run.stdout.strip() == 'ok', run.stderr[-3000:]


def test_training_from_a_prepared_dir_without_the_extra_fails_in_validation_naming_it(tiny_config, tmp_path,
                                                                                     monkeypatch):
  from lungjax import config_check  # pylint: disable=g-import-not-at-top
  config_check.validate(tiny_config, 'train')
  tiny_config.data.prepared_dir = str(tmp_path / 'prepared')
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)
  with pytest.raises(ModuleNotFoundError, match=r"config.data.prepared_dir=.*prepared.*pip install 'lungjax\[prepare\]'"):
    config_check.validate(tiny_config, 'train')


def test_kaggle_download_without_kagglehub_names_the_extra(tmp_path, monkeypatch):
  from lungjax.data import download  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(sys.modules, 'kagglehub', None)  # As if the [kaggle] extra were not installed.
  monkeypatch.setenv('KAGGLEHUB_CACHE', str(tmp_path))
  with pytest.raises(RuntimeError, match=r"pip install 'lungjax\[kaggle\]'") as error:
    download.resolve_data_root('', 'owner/name', kaggle_url='https://kaggle.invalid')
  assert '--config.data.root=' in str(error.value)


def test_keras_weights_without_h5py_names_the_extra(tmp_path, monkeypatch):
  from lungjax.models import keras_weights  # pylint: disable=g-import-not-at-top
  weights = tmp_path / 'w.h5'
  weights.write_bytes(b'not read')
  monkeypatch.setitem(sys.modules, 'h5py', None)
  with pytest.raises(ImportError, match=r"w.h5.*config.model.init_from.*pip install 'lungjax\[keras\]'"):
    keras_weights.read_keras_layers(str(weights))


def _run(command, **kwargs):
  run = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False, **kwargs)
  assert run.returncode == 0, f'{command}:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}'
  return run


def _site_dirs() -> list[str]:
  """The folders this interpreter imports installed packages from: its site-packages (a venv's own, and the base
  interpreter's where the venv was made with --system-site-packages; a conda environment's), and the user site."""
  dirs = list(site.getsitepackages())
  if site.ENABLE_USER_SITE:
    dirs.append(site.getusersitepackages())
  dirs += [sysconfig.get_path('purelib'), sysconfig.get_path('platlib')]
  return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


def _venv_seeing_this_environment(venv) -> str:
  """Makes a venv that imports this environment's packages without installing any, and returns its python.

  `venv --system-site-packages` would show the new venv the *base* interpreter's site-packages: inside a venv or a
  conda environment that is not where lungjax's dependencies are (the test then fails with ModuleNotFoundError).
  Instead the new venv gets a `.pth` file naming the folders the running interpreter imports from. A `.pth` line
  that is a path puts that folder on sys.path after the venv's own site-packages, so the wheel installed into the
  venv wins over an editable lungjax here, and the `.pth` files of those folders (the editable install's finder
  among them) are not run."""
  _run([sys.executable, '-m', 'venv', '--without-pip', str(venv)])
  python = str(venv / 'bin' / 'python')
  inner = _run([python, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))']).stdout.strip()
  with open(os.path.join(inner, 'lungjax-test-outer-environment.pth'), 'w', encoding='utf-8') as f:
    f.write(''.join(f'{d}\n' for d in _site_dirs()))
  return python


def test_a_new_venv_sees_this_environment_packages_but_not_its_editable_lungjax(tmp_path):
  """The set-up the install test relies on: inside any environment (venv, conda, base), the new venv imports the
  dependencies from where this interpreter has them, and `import lungjax` there fails until a wheel is installed
  (the editable install of the checkout is not visible, so the test cannot pass on the checkout's copy)."""
  python = _venv_seeing_this_environment(tmp_path / 'venv')
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
  code = ('import importlib.util, sys, ml_collections, jax, flax, optax, orbax.checkpoint, grain; '
          'print(sys.prefix); print(ml_collections.__file__); print(importlib.util.find_spec("lungjax"))')
  prefix, ml_collections_file, lungjax_spec = _run([python, '-c', code], cwd=tmp_path, env=env).stdout.split('\n')[:3]
  assert prefix == str(tmp_path / 'venv')
  import ml_collections  # pylint: disable=g-import-not-at-top
  assert ml_collections_file == ml_collections.__file__  # The same copy this environment imports.
  assert lungjax_spec == 'None', lungjax_spec


@pytest.mark.slow
def test_a_regular_install_works_from_another_folder(synthetic_root, tmp_path):
  """A wheel installed (not editable) into a new venv: run from a folder without the checkout, the installed copy
  is imported, the configs ship in it, and `lungjax` trains with --config=tiny and predicts. The venv sees this
  environment's packages (`_venv_seeing_this_environment`) so that nothing is downloaded; lungjax itself comes from
  the wheel (--no-deps)."""
  source, wheels = tmp_path / 'source', tmp_path / 'wheels'  # A copy: building in place leaves build/ behind.
  shutil.copytree(REPO, source, ignore=shutil.ignore_patterns('.git', 'build', '*.egg-info', '__pycache__', 'workdirs',
                                                               'results', '.pytest_cache'))
  _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--quiet', '-w', str(wheels),
        str(source)], cwd=tmp_path)
  (wheel,) = glob.glob(str(wheels / 'lungjax-*.whl'))
  names = zipfile.ZipFile(wheel).namelist()
  for name in ('cnn', 'tiny', 'resnet', 'vgg', 'autoencoder', 'cnn_augment', 'multisource', 'robust'):
    assert f'lungjax/configs/{name}.py' in names
  assert 'lungjax/cli.py' in names and any(n.endswith('.cc') for n in names)
  assert not any(n.startswith(('configs/', 'tests/')) for n in names)
  metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith('.dist-info/METADATA'))).decode()
  core = [line.split(':', 1)[1] for line in metadata.splitlines()
          if line.startswith('Requires-Dist:') and 'extra ==' not in line]
  assert core and not {_name(r) for r in core} & set(HEAVY)

  venv = tmp_path / 'venv'
  python = _venv_seeing_this_environment(venv)
  lungjax = str(venv / 'bin' / 'lungjax')
  _run([python, '-m', 'pip', 'install', '--no-deps', '--quiet', wheel])
  away = tmp_path / 'elsewhere'
  away.mkdir()
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
  env.update(JAX_PLATFORMS='cpu', PATH=f'{venv / "bin"}:{env.get("PATH", "")}')
  where = _run([python, '-c', 'import lungjax, lungjax.configs as c; print(lungjax.__file__); print(c.CONFIG_DIR)'],
               cwd=away, env=env).stdout.split()
  assert all(path.startswith(str(venv)) for path in where), where
  assert 'train' in _run([lungjax, '--help'], cwd=away, env=env).stdout

  workdir = away / 'w'
  _run([lungjax, 'train', '--config=tiny', f'--config.data.root={synthetic_root}', f'--workdir={workdir}',
        '--config.train.num_epochs=1', '--config.eval.n_bootstrap=20'], cwd=away, env=env)
  assert glob.glob(str(workdir / 'events.out.tfevents.*')) and os.path.isfile(workdir / 'summary.json')
  image = sorted(glob.glob(os.path.join(synthetic_root, 'test', '*', '*')))[0]
  predicted = _run([lungjax, 'predict', f'--workdir={workdir}', image], cwd=away, env=env)
  line = json.loads(predicted.stdout.strip().splitlines()[-1])
  assert line['file'] == image and 'error' not in line
  example = ('import lungjax\n'
             f'model = lungjax.load({str(workdir)!r})\n'
             'print(model.classes, model.checkpoint_step)\n'
             f'probabilities = model.predict([{image!r}])\n'
             f'heatmap = model.explain({image!r}, class_name=model.classes[0])\n'
             'print(probabilities.shape, round(float(probabilities.sum()), 4), heatmap.shape)\n')
  printed = _run([python, '-c', example], cwd=away, env=env).stdout.strip().splitlines()[-1]
  assert printed.startswith('(1, 3) 1.0 ('), printed  # The README's five lines, from the installed package.
