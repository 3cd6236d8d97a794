"""config_check.validate: every field refused in one place, naming the field, before any work."""

import ml_collections
import pytest

from configs import autoencoder, cnn, cnn_augment, lungs as lungs_config, multisource, resnet, robust, tiny, vgg
from lungjax import config_check
from lungjax.runtime import run_fields


def _image_folders(tmp_path):
  """(eval_dir, explain_dir): a folder of class sub-folders and a flat folder of one image, neither decoded."""
  for folder in ('eval/Covid', 'eval/Normal', 'loose'):
    (tmp_path / folder).mkdir(parents=True, exist_ok=True)
  (tmp_path / 'eval' / 'Covid' / 'a.png').write_bytes(b'not decoded')
  (tmp_path / 'loose' / 'b.jpg').write_bytes(b'not decoded')
  return str(tmp_path / 'eval'), str(tmp_path / 'loose')


def _with_folders(config, tmp_path):
  config.eval.dir, config.explain.dir = _image_folders(tmp_path)
  return config


@pytest.mark.parametrize('module', [autoencoder, cnn, cnn_augment, resnet, robust, tiny, vgg])
def test_the_shipped_configs_pass_every_mode(module, tmp_path):
  for mode in config_check.MODES:
    config = _with_folders(module.get_config(), tmp_path)
    assert config_check.validate(config, mode) is None
    # validate really read this config in this mode: the same config with one field broken is refused, by name.
    config.eval.batch_size = 0
    with pytest.raises(ValueError, match=r'config\.eval\.batch_size'):
      config_check.validate(config, mode)
  # And the training checks read the shipped values: an image size the model cannot take is refused.
  config = module.get_config()
  config.data.image_size = 4
  with pytest.raises(ValueError, match=r'config\.data\.image_size=4'):
    config_check.validate(config, 'train')
  assert tuple(module.get_config().data.classes) == ('Covid', 'Normal', 'Viral Pneumonia')


@pytest.mark.parametrize('field, value, message', [
    ('data.classes', ('Covid',), 'config.data.classes'),
    ('data.classes', ('Covid', 'Covid'), 'config.data.classes'),
    ('data.image_size', 4, 'config.data.image_size=4'),
    ('data.val_fraction', 1.5, 'config.data.val_fraction'),
    ('train.num_epochs', 0, 'config.train.num_epochs=0'),
    ('train.learning_rate', 0.0, 'config.train.learning_rate=0.0'),
    ('train.log_every_steps', 0, 'config.train.log_every_steps=0'),
    ('train.class_weighting', 'inverse', 'config.train.class_weighting'),
    ('train.source_weighting', 'by_size', 'config.train.source_weighting'),
    ('train.lr_schedule', 'step', 'config.train.lr_schedule'),
    ('checkpoint.keep_latest', 0, 'config.checkpoint.keep_latest=0'),
    ('checkpoint.keep_best', -1, 'config.checkpoint.keep_best=-1'),
    ('cv.folds', 1, 'config.cv.folds=1'),
    ('seeds', 0, 'config.seeds=0'),
    ('augment.rotation_prob', 1.5, 'config.augment.rotation_prob'),
    ('data.extra_class_names', 'COVID=Covid', 'config.data.extra_class_names'),
    ('model.name', 'resnt', 'config.model.name=.resnt'),
    ('model.name', 'unet', 'config.model.name=.unet'),  # A segmentation model, not a classifier.
    ('model.head', 'max', 'config.model.head=.max'),
    ('model.conv_impl', 'fast', 'config.model.conv_impl=.fast'),
    ('model.dtype', 'float16', 'config.model.dtype=.float16'),
    ('model.typo_field', 1, r"config.model has fields \['typo_field'\]"),
    ('train.cpu_compiler_options', 'no_equals_sign', 'config.train.cpu_compiler_options'),
    ('name', '', "config.name=''"),
    ('seed', -1, 'config.seed=-1'),
    ('data.split_seed', -2, 'config.data.split_seed=-2'),
    ('data.near_copy_threshold', 0.0, 'config.data.near_copy_threshold=0.0'),
    ('data.near_copy_threshold', 1.5, 'config.data.near_copy_threshold=1.5'),
    ('data.metadata_file_column', '', "config.data.metadata_file_column=''"),
    ('train.batch_size', 0, 'config.train.batch_size=0'),
    ('train.adam_b1', 1.0, 'config.train.adam_b1=1.0'),
    ('train.adam_b2', -0.1, 'config.train.adam_b2=-0.1'),
    ('train.adam_eps', 0.0, 'config.train.adam_eps=0.0'),
    ('train.freeze_backbone_epochs', -1, 'config.train.freeze_backbone_epochs=-1'),
    ('cv.folds', -3, 'config.cv.folds=-3'),
    ('model.conv_features', (), r'config.model.conv_features=\(\)'),
    ('model.conv_features', (8, 0), r'config.model.conv_features=\(8, 0\)'),
    ('model.dense_features', (16, -1), r'config.model.dense_features=\(16, -1\)'),
    ('model.dropout_rate', 1.0, 'config.model.dropout_rate=1.0'),
    ('model.dropout_rate', -0.1, 'config.model.dropout_rate=-0.1'),
])
def test_a_bad_training_field_is_named(field, value, message):
  config = tiny.get_config()
  *sections, name = field.split('.')
  node = config
  for section in sections:
    node = node[section]
  node[name] = value
  with pytest.raises(ValueError, match=message):
    config_check.validate(config, 'train')


@pytest.mark.parametrize('mode', config_check.MODES)
@pytest.mark.parametrize('field, value, message', [
    ('checkpoint.best_metric', 'auc', 'config.checkpoint.best_metric'),
    ('checkpoint.on_mismatch', 'ignore', 'config.checkpoint.on_mismatch'),
    ('eval.tta_views', -1, 'config.eval.tta_views'),
    ('eval.n_bootstrap', 0, 'config.eval.n_bootstrap=0'),
    ('train.keep_freed_host_memory_gb', -1.0, 'config.train.keep_freed_host_memory_gb'),
    ('eval.step', -2, 'config.eval.step=-2'),
    ('data.decode_threads', -1, 'config.data.decode_threads=-1'),
    ('task', 'segment', "config.task='segment'"),
    ('format_version', 99, 'config.format_version=99'),
])
def test_a_bad_field_of_every_mode_is_named(mode, field, value, message):
  config = tiny.get_config()
  *sections, name = field.split('.')
  node = config
  for section in sections:
    node = node[section]
  node[name] = value
  with pytest.raises(ValueError, match=message):
    config_check.validate(config, mode)


@pytest.mark.parametrize('module, field, value, message', [
    (resnet, 'depth', 19, 'config.model.depth=19 is not a ResNet depth'),
    (resnet, 'norm', 'layer', 'config.model.norm=.layer'),
    (resnet, 'bn_momentum', 1.0, 'config.model.bn_momentum=1.0'),
    (vgg, 'depth', 12, 'config.model.depth=12 is not a VGG depth'),
    (vgg, 'pooling', 'max', 'config.model.pooling=.max'),
    (vgg, 'width', 0, 'config.model.width=0'),
    (vgg, 'dense_features', (8, 0), r'config.model.dense_features=\(8, 0\)'),
    (resnet, 'width', -4, 'config.model.width=-4'),
    (resnet, 'dropout_rate', 1.5, 'config.model.dropout_rate=1.5'),
])
def test_the_model_registry_check_names_a_bad_field_of_each_model(module, field, value, message):
  config = module.get_config()
  config.data.root = ''
  config.model[field] = value
  with pytest.raises(ValueError, match=message):
    config_check.validate(config, 'train')


def test_the_gap_head_needs_a_dense_layer():
  config = tiny.get_config()
  config.model.head, config.model.dense_features = 'gap', ()
  with pytest.raises(ValueError, match=r"config.model.dense_features=\(\) and config.model.head='gap'"):
    config_check.validate(config, 'train')
  config.model.head = 'flatten'  # The flatten head feeds the logits straight from the last conv map.
  assert config_check.validate(config, 'train') is None


def test_each_ensemble_run_must_be_a_workdir(tmp_path):
  config = _with_folders(tiny.get_config(), tmp_path)
  run = tmp_path / 'run_b'
  run.mkdir()
  config.eval.ensemble = f' {run} '
  for mode in ('train', 'explain', 'shortcuts'):  # Only --mode=eval reads it.
    config_check.validate(config, mode)
  with pytest.raises(FileNotFoundError, match=r"config.eval.ensemble=.*run_b' is not a folder that lungjax.main "):
    config_check.validate(config, 'eval')
  (run / 'config.json').write_text('{}')
  assert config_check.validate(config, 'eval') is None


def test_keras_weights_for_a_model_keras_lacks_are_refused_in_validation():
  config = vgg.get_config()
  config.model.init_from, config.model.depth = '/nowhere/vgg11.h5', 11
  with pytest.raises(ValueError, match='config.model.depth=11: keras.applications has vgg weights only'):
    config_check.validate(config, 'train')


def test_an_unknown_explain_class_is_refused_in_validation(tmp_path):
  config = _with_folders(tiny.get_config(), tmp_path)
  config.explain.class_name = 'Covid-19'
  config_check.validate(config, 'train')  # Only --mode=explain reads it.
  with pytest.raises(ValueError, match="config.explain.class_name='Covid-19'"):
    config_check.validate(config, 'explain')


@pytest.mark.parametrize('mode, field, value, error, message', [
    ('eval', 'eval.dir', '', ValueError, r'--mode=eval needs .*--config.eval.dir=FOLDER'),
    ('shortcuts', 'eval.dir', '', ValueError, r'--mode=shortcuts needs .*--config.eval.dir=FOLDER'),
    ('eval', 'eval.dir', '/no/such/folder', FileNotFoundError, r"'/no/such/folder' is not a folder"),
    ('eval', 'eval.dir', '{tmp}/eval,/no/such', FileNotFoundError, r"'/no/such' is not a folder"),
    ('eval', 'eval.dir', ',', ValueError, r"config.eval.dir=',' names no folder"),
    ('eval', 'eval.dir', '{tmp}/eval,{tmp}/eval/', ValueError, r"basename, and \['eval', 'eval'\] repeat one"),
    ('shortcuts', 'eval.dir', '{tmp}/eval,{tmp}/loose', ValueError, r'--mode=shortcuts checks one folder, not 2'),
    ('eval', 'eval.class_names', 'COVID', ValueError, r'config.eval.class_names'),
    ('shortcuts', 'eval.class_names', 'COVID=Flu', ValueError, r'config.eval.class_names'),
    ('explain', 'explain.dir', '', ValueError, r'--config.explain.dir=FOLDER'),
    ('explain', 'explain.dir', '/no/such/folder', FileNotFoundError, r"config.explain.dir='/no/such/folder' is not"),
    ('explain', 'explain.dir', '{tmp}/empty', ValueError, r'has no .jpg/.jpeg/.png images and no class sub-folders'),
    ('explain', 'explain.class_name', 'Flu', ValueError, r"config.explain.class_name='Flu' is not one of"),
    ('train', 'autoencoder.extra_dirs', ('/no/such/folder',), FileNotFoundError, r'config.autoencoder.extra_dirs'),
    ('train', 'autoencoder.extra_dirs', ('{tmp}/empty',), ValueError, r'config.autoencoder.extra_dirs .*no .jpg'),
])
def test_a_bad_folder_field_is_named_by_its_mode(tmp_path, mode, field, value, error, message):
  """Each field a mode reads from the disk (listed, never decoded) is refused in validate, before any work."""
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'notes.txt').write_text('no image')
  config = _with_folders((autoencoder if field.startswith('autoencoder') else tiny).get_config(), tmp_path)
  if field.startswith('autoencoder'):
    config.autoencoder.extra_dirs = (config.explain.dir,)
  assert config_check.validate(config, mode) is None  # The folders above pass: only the one field below is bad.
  section, name = field.split('.')
  fill = lambda v: v.replace('{tmp}', str(tmp_path)) if isinstance(v, str) else tuple(map(fill, v))
  config[section][name] = fill(value)
  with pytest.raises(error, match=message):
    config_check.validate(config, mode)
  for other in config_check.MODES:  # Only the modes that read the field refuse it.
    if other != mode and (other, field) not in {('eval', 'eval.dir'), ('shortcuts', 'eval.dir'),
                                                ('eval', 'eval.class_names'), ('shortcuts', 'eval.class_names')}:
      config_check.validate(config, other)


def _lungs_table(tmp_path):
  table = tmp_path / 'lungs.csv'
  table.write_text('file,lung_mask,patientid,view\na.png,a_mask.png,1,PA\n')
  return str(table)


@pytest.mark.parametrize('base, mode, fields, message', [
    # (a packaged config, the mode, {field: value} set on it, what the error must say). Checks of one field that
    # hold only together with another (or a mode), one row each.
    (tiny, 'train', {'eval.subgroups': 'sex'}, r"config.eval.subgroups='sex' needs config.eval.metadata"),
    (tiny, 'eval', {'eval.subgroup_min_images': 0}, 'config.eval.subgroup_min_images=0'),
    (tiny, 'eval', {'eval.metadata_file_column': ''}, "config.eval.metadata_file_column=''"),
    (autoencoder, 'train', {'model.name': 'resnet'}, r"config.autoencoder.enabled .* config.model.name must be"),
    (autoencoder, 'train', {'model.init_from': '/w.h5'}, r"config.model.init_from='/w.h5' and config.autoencoder"),
    (autoencoder, 'train', {'data.image_size': 36}, r'config.data.image_size=36 must be divisible by 8'),
    (autoencoder, 'train', {'model.conv_features': ()}, r'config.model.conv_features=\(\)'),
    (tiny, 'train', {'cv.by_source': 1}, 'config.cv.by_source=1 must be True or False'),
    (tiny, 'train', {'cv.by_source': True}, 'config.cv.by_source=True needs at least two training sources'),
    (tiny, 'train', {'data.preprocess.crop_borders': True, 'data.prepared_dir': '{tmp}/prepared'},
     r'config.data.preprocess is on and config.data.prepared_dir='),
    (tiny, 'shortcuts', {'shortcuts.region': 'lobes'}, r"config.shortcuts.region='lobes' is not one of"),
    (lungs_config, 'eval', {}, r"config.task='lungs' trains the lung U-Net: --mode='eval'"),
    (lungs_config, 'train', {'model.name': 'cnn'}, r"config.model.name='cnn' is not allowed"),
    (lungs_config, 'train', {'model.features': (16,)}, r'config.model.features=\(16,\)'),
    (lungs_config, 'train', {'model.downsample': 0}, 'config.model.downsample=0'),
    (lungs_config, 'train', {'data.image_size': 100}, 'config.data.image_size=100'),
    (lungs_config, 'train', {'lungs.test_fraction': 1.0}, 'config.lungs.test_fraction=1.0'),
    (lungs_config, 'train', {'lungs.dice_weight': -1.0}, 'config.lungs.dice_weight=-1.0'),
    (lungs_config, 'train', {'lungs.limit': -1}, 'config.lungs.limit=-1'),
    (lungs_config, 'train', {'checkpoint.best_metric': 'accuracy'}, "config.checkpoint.best_metric='accuracy'"),
    (lungs_config, 'train', {'lungs.metadata': '{tmp}/none.csv'}, r"config.lungs.metadata='.*none.csv' is not a"),
    (lungs_config, 'train', {'lungs.augment.gamma': (1.2, 0.8)}, r'config.lungs.augment.gamma=\(1.2, 0.8\)'),
    (lungs_config, 'train', {'lungs.augment.scale': (0.0, 1.1)}, r'config.lungs.augment.scale=\(0.0, 1.1\)'),
])
def test_a_field_refused_with_another_or_in_a_mode_is_named(tmp_path, base, mode, fields, message):
  config = _with_folders(base.get_config(), tmp_path)
  if base is lungs_config:
    config.lungs.metadata = _lungs_table(tmp_path)
  assert config_check.validate(config, mode if base is not lungs_config else 'train') is None
  for field, value in fields.items():
    section, name = field.rsplit('.', 1)
    parent, key = (config, section) if '.' not in section else (config[section.split('.')[0]], section.split('.')[1])
    value = value.replace('{tmp}', str(tmp_path)) if isinstance(value, str) else value
    # As a config.json may hold it: a value of another type than the packaged one (ConfigDict refuses to cast it).
    parent[key] = ml_collections.ConfigDict({**parent[key].to_dict(), name: value})
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    config_check.validate(config, mode)


def test_folds_and_seeds_together_are_refused():
  config = tiny.get_config()
  config.cv.folds, config.seeds = 3, 2
  with pytest.raises(ValueError, match='config.cv.folds=3 and config.seeds=2'):
    config_check.validate(config)


def test_distributed_fields_are_checked_only_when_enabled():
  config = tiny.get_config()
  config.distributed.num_processes = -1
  config_check.validate(config)
  config.distributed.enabled = True
  with pytest.raises(ValueError, match='config.distributed.num_processes'):
    config_check.validate(config)


def test_an_unknown_mode_is_refused():
  with pytest.raises(ValueError, match='--mode'):
    config_check.validate(tiny.get_config(), 'predict')


def test_a_missing_extra_source_folder_is_named():
  config = multisource.get_config()
  config.data.extra_root = '/no/such/folder'
  with pytest.raises(FileNotFoundError, match='config.data.extra_root'):
    config_check.validate(config)


_MAIN_WITHOUT_DECODING = '''
import runpy, sys
from lungjax.data import images, loading
def _refuse(*args, **kwargs):
  raise SystemExit('DATA WAS DECODED before the bad field was found')
images.decode_records = loading.images.decode_records = _refuse
sys.argv = ['lungjax.main', *sys.argv[1:]]
runpy.run_module('lungjax.main', run_name='__main__', alter_sys=True)
'''


@pytest.mark.parametrize('config_file, override, field', [
    ('configs/cnn.py', '--config.model.name=resnt', 'config.model.name'),
    ('configs/tiny.py', '--config.model.name=resnt', 'config.model.name'),
    ('configs/tiny.py', '--config.model.head=max', 'config.model.head'),
    ('configs/cnn.py', '--config.train.adam_eps=0.0', 'config.train.adam_eps'),
])
def test_main_refuses_a_bad_model_field_before_any_data_is_decoded(tmp_path, config_file, override, field):
  """lungjax.main with a data root whose decoding would stop the process: the error names the field instead."""
  import os, subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  from tests.conftest import write_image_folder  # pylint: disable=g-import-not-at-top
  root = tmp_path / 'data'
  write_image_folder(str(root / 'train'), per_class=2, seed=0)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = subprocess.run([sys.executable, '-c', _MAIN_WITHOUT_DECODING, f'--config={config_file}',
                        f'--config.data.root={root}', f'--workdir={tmp_path / "w"}', override], cwd=repo,
                       env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': repo}, capture_output=True, text=True,
                       timeout=600, check=False)
  assert run.returncode != 0 and field in run.stderr, run.stderr[-3000:]
  assert 'DATA WAS DECODED' not in run.stderr + run.stdout


def test_a_binned_subgroup_column_holding_a_word_is_refused_before_any_work(tmp_path):
  table = tmp_path / 'meta.csv'
  table.write_text('file,age,sex\nCovid/a.png,34,F\nNormal/b.png,,M\n')
  config = tiny.get_config()
  config.eval.metadata, config.eval.subgroups = str(table), 'sex,age:0-40,40-'
  assert config_check.validate(config, 'train') is None  # An empty value is UNKNOWN, not an error.
  table.write_text('file,age,sex\nCovid/a.png,34,F\nNormal/b.png,adult,M\n')
  for mode in config_check.MODES:
    with pytest.raises(ValueError, match=r"config.eval.subgroups: column 'age' is binned but holds 'adult'"):
      config_check.validate(_with_folders(config, tmp_path), mode)


@pytest.mark.parametrize('mode', config_check.MODES)
def test_a_classifier_may_not_choose_its_checkpoint_by_dice(mode, tmp_path):
  config = _with_folders(cnn.get_config(), tmp_path)
  config.checkpoint.best_metric = 'dice'  # One of BEST_METRICS, but only the lung U-Net reports val_dice.
  with pytest.raises(ValueError, match=r"config\.checkpoint\.best_metric='dice'.*config\.task='lungs'"):
    config_check.validate(config, mode)
  config.checkpoint.best_metric = 'macro_recall'
  assert config_check.validate(config, mode) is None


def test_a_problem_only_the_data_shows_names_the_field_and_the_folder(tmp_path):
  """Not a config check (validate passes): found when the folder is read, but named by the field that chose it."""
  import shutil  # pylint: disable=g-import-not-at-top
  from lungjax.data import loading  # pylint: disable=g-import-not-at-top
  from tests.conftest import write_image_folder  # pylint: disable=g-import-not-at-top
  write_image_folder(str(tmp_path / 'train'), per_class=1, seed=0)
  shutil.rmtree(tmp_path / 'train' / 'Normal')
  config = tiny.get_config()
  config.data.root = str(tmp_path)
  assert config_check.validate(config, 'train') is None
  with pytest.raises(FileNotFoundError, match=rf"config.data.root='{tmp_path}': class folder missing: .*Normal"):
    loading.load_training_folder(config)
  (tmp_path / 'eval' / 'Normal').mkdir(parents=True)  # Class folders, but not one image in them.
  with pytest.raises(ValueError, match=rf"config.eval.dir='{tmp_path}/eval': no .jpg/.jpeg/.png images under"):
    loading.load_folders(str(tmp_path / 'eval'), config)


def test_the_shortcuts_region_is_read_and_checked_by_config_check_and_shared_by_shortcuts(tmp_path, monkeypatch):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from lungjax import lungs  # pylint: disable=g-import-not-at-top
  from lungjax.explain import shortcuts  # pylint: disable=g-import-not-at-top
  config = cnn.get_config()
  assert shortcuts.REGIONS == config_check.SHORTCUTS_REGIONS == ('mask', 'box')
  old = run_fields.with_defaults(ml_collections.ConfigDict({'name': 'old'}))  # Saved before the field, upgraded.
  assert shortcuts.region_of(old) == 'mask'
  config.shortcuts = ml_collections.ConfigDict({'region': 'box'})
  assert config_check.shortcuts_region(config) == 'box'
  config_check.check_shortcuts_region(config)
  config.shortcuts.region = 'lobes'
  with pytest.raises(ValueError, match=r"config.shortcuts.region='lobes' is not one of \['mask', 'box'\]"):
    config_check.check_shortcuts_region(config)
  config.shortcuts.region = 'mask'
  monkeypatch.setattr(lungs, 'WEIGHTS_PATH', str(tmp_path / 'missing.npz'))
  with pytest.raises(ValueError, match='region=box'):
    config_check.check_shortcuts_region(config)


def test_robust_is_the_cnn_with_the_stage_one_winner_of_its_selection():
  """configs/robust.py = configs/cnn.py + the changes of results/robust/selection/'s chosen candidate, nothing else."""
  chosen, study = robust.get_config().to_dict(), cnn.get_config().to_dict()
  assert chosen.pop('name') == 'robust'
  study.pop('name')
  assert chosen['model'].pop('head') == 'gap' and study['model'].pop('head') == 'flatten'
  assert chosen == study
