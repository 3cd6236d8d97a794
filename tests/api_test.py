"""The Python API: lungjax.load(workdir) restores a trained run; predict gives --mode=eval's numbers, calibrated, for
paths, PIL images and arrays of any size; explain gives a Grad-CAM map; importing lungjax does not import JAX."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import lungjax
from lungjax import calibration, checkpoints, evaluate, inference
from lungjax.runtime import workdir as workdir_lib
from lungjax.data import images
from tests.conftest import CLASSES
from tests.predict_test import trained_workdir  # pylint: disable=unused-import  (a fixture: a tiny trained run)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def model(trained_workdir):
  record = calibration.read(trained_workdir)
  if record['temperature'] == 1.0 and record['fitted_temperature'] != 1.0:
    # The tiny run's fit worsened its own out-of-fold ECE, so it is not served (issue 26, Low 6): serve the fit here,
    # so that the calibrated numbers below differ from the raw ones.
    calibration.write(trained_workdir, {**record, 'temperature': record['fitted_temperature']})
    marked = workdir_lib.read_json(os.path.join(trained_workdir, workdir_lib.COMPLETE))['files']
    workdir_lib.finish_unit(trained_workdir, marked)  # The run's final outputs, this edit included, one unit again.
  return lungjax.load(trained_workdir)


def _test_files(synthetic_root):
  folder = os.path.join(synthetic_root, 'test')
  return [os.path.join(folder, c, f'{i:03d}.png') for c in CLASSES for i in range(4)]


def test_importing_lungjax_is_cheap_and_names_its_api():
  code = ('import sys, lungjax; assert "jax" not in sys.modules and "numpy" not in sys.modules, sorted(sys.modules);'
          'print(lungjax.__all__, lungjax.__version__, lungjax.load.__module__, lungjax.Model.__name__)')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split()[-2:] == ['lungjax.inference', 'Model'], result.stdout
  assert sorted(lungjax.__all__) == ['Model', '__version__', 'load', 'load_lungs', 'lung_masks', 'segment']
  assert isinstance(lungjax.__version__, str) and lungjax.__version__
  assert lungjax.load is inference.load and lungjax.Model is inference.Model
  with pytest.raises(AttributeError, match='no attribute'):
    lungjax.no_such_name  # pylint: disable=pointless-statement
  assert os.path.exists(os.path.join(REPO, 'lungjax', 'py.typed'))


def test_the_model_knows_its_run(model, trained_workdir):
  summary = json.loads(open(os.path.join(trained_workdir, 'summary.json')).read())
  assert model.classes == CLASSES and model.image_size == 32
  assert model.checkpoint_step == summary['best_step']  # The best checkpoint.
  assert list(model.config.model.conv_features) == [4, 8, 8]
  assert model.temperature == json.loads(open(calibration.path(trained_workdir)).read())['temperature']
  assert model.temperature != 1.0  # So that the calibrated numbers below differ from the raw ones.
  assert 'checkpoint_step=' in repr(model)


def test_predict_gives_the_numbers_of_mode_eval_calibrated(model, trained_workdir, synthetic_root, tiny_config):
  tiny_config.eval.dir = os.path.join(synthetic_root, 'test')
  metrics = evaluate.evaluate_checkpoint(tiny_config, trained_workdir)
  files, _, eval_NC = evaluate.read_predictions(os.path.join(metrics['out_dir'], 'predictions.csv'), CLASSES)
  assert sorted(files) == sorted(_test_files(synthetic_root)) and metrics['checkpoint_step'] == model.checkpoint_step
  raw_NC = model.predict(files, calibrated=False)
  assert raw_NC.shape == (12, 3)
  np.testing.assert_allclose(raw_NC, eval_NC, rtol=0, atol=1e-6)  # predictions.csv holds 6 decimals.
  calibrated_NC = model.predict(files)
  np.testing.assert_allclose(calibrated_NC, calibration.scale_probabilities(raw_NC, model.temperature), rtol=0,
                             atol=1e-12)
  np.testing.assert_allclose(calibrated_NC, calibration.scale_probabilities(eval_NC, model.temperature), rtol=0,
                             atol=1e-5)
  np.testing.assert_allclose(calibrated_NC.sum(axis=1), 1.0, atol=1e-9)
  assert not np.allclose(calibrated_NC, raw_NC, rtol=0, atol=1e-9)  # The temperature was applied.
  # Any batch: in another order, alone, one path not in a list.
  reordered = model.predict(files[::-1], calibrated=False)
  np.testing.assert_allclose(reordered[::-1], raw_NC, rtol=0, atol=1e-6)
  np.testing.assert_allclose(model.predict(files[5], calibrated=False), raw_NC[5:6], rtol=0, atol=1e-6)
  assert model.predict([]).shape == (0, 3)


def test_pil_images_and_arrays_of_any_size_predict_like_their_files(model, tmp_path):
  rng = np.random.default_rng(3)
  grey_HW = rng.integers(0, 256, (53, 37), np.uint8)  # Odd sizes, not square, not the model's 32.
  rgb_HWC = rng.integers(0, 256, (41, 70, 3), np.uint8)
  grey_png, rgb_png = str(tmp_path / 'grey.png'), str(tmp_path / 'rgb.png')
  Image.fromarray(grey_HW).save(grey_png)
  Image.fromarray(rgb_HWC).save(rgb_png)
  by_path = model.predict([grey_png, rgb_png])
  with Image.open(grey_png) as grey_image, Image.open(rgb_png) as rgb_image:
    by_pil = model.predict([grey_image, rgb_image])
  np.testing.assert_array_equal(by_pil, by_path)
  np.testing.assert_array_equal(model.predict([grey_HW, rgb_HWC]), by_path)
  np.testing.assert_array_equal(model.predict([np.repeat(grey_HW[..., None], 3, axis=-1)]), by_path[:1])
  np.testing.assert_array_equal(model.predict(grey_HW[..., None]), by_path[:1])  # H x W x 1: grey.
  np.testing.assert_array_equal(model.pixels(grey_HW)[0], images.load_image(grey_png, 32).pixels_HWC)
  stacked_NHWC = rng.integers(0, 256, (3, 20, 20, 3), np.uint8)
  np.testing.assert_array_equal(model.predict(stacked_NHWC), model.predict(list(stacked_NHWC)))
  assert not np.allclose(by_path[0], by_path[1])  # Different pictures, different answers.


def test_inputs_it_cannot_read_are_refused_naming_what_is_wrong(model, tmp_path):
  with pytest.raises(TypeError, match='uint8'):
    model.predict(np.zeros((8, 8), np.float32))
  with pytest.raises(ValueError, match=r'H x W x 3.*\(8, 8, 4\)'):
    model.predict(np.zeros((8, 8, 4), np.uint8))
  with pytest.raises(TypeError, match='file path, a PIL image or a uint8 numpy array'):
    model.predict([3])
  missing = str(tmp_path / 'missing.png')
  with pytest.raises(images.BadImageError, match='no such file') as caught:
    model.predict(missing)
  assert caught.value.path == missing


def test_explain_maps_the_predicted_class_or_the_named_one(model, synthetic_root):
  path = _test_files(synthetic_root)[0]
  heatmap_HW = model.explain(path)
  with Image.open(path) as image:
    own_HW = (image.height, image.width)
  assert own_HW != (32, 32)  # The model's input size: the map comes back at the image's own size.
  assert heatmap_HW.shape == own_HW and heatmap_HW.dtype == np.float32
  assert heatmap_HW.min() >= 0.0 and heatmap_HW.max() <= 1.0 and heatmap_HW.max() > 0.0
  predicted = CLASSES[int(model.predict(path)[0].argmax())]
  np.testing.assert_array_equal(model.explain(path, class_name=predicted), heatmap_HW)
  other = next(c for c in CLASSES if c != predicted)
  other_HW = model.explain(path, class_name=other)
  assert other_HW.shape == own_HW and 0.0 <= other_HW.min() and other_HW.max() <= 1.0
  assert not np.array_equal(other_HW, heatmap_HW)
  with Image.open(path) as image:
    np.testing.assert_array_equal(model.explain(image), heatmap_HW)
  grey_HW = np.asarray(Image.open(path).convert('L').resize((70, 50)))
  wide_HW = model.explain(grey_HW)
  assert wide_HW.shape == (50, 70) and 0.0 <= wide_HW.min() and wide_HW.max() <= 1.0
  with pytest.raises(ValueError, match='explain takes one image'):
    model.explain([path, path])
  with pytest.raises(ValueError, match=r"class_name='Flu' is not one of .*\['Covid', 'Normal', 'Viral Pneumonia'\]"):
    model.explain(path, class_name='Flu')
  with pytest.raises(ValueError, match='not a module of'):
    model.explain(path, layer='no_such_layer')


def test_step_restores_that_checkpoint(model, trained_workdir, synthetic_root):
  # keep_latest=1 and keep_best=1: one or two steps, as the validation metric went.
  saved = sorted(int(name) for name in os.listdir(checkpoints.checkpoint_dir(trained_workdir)) if name.isdigit())
  assert saved and model.checkpoint_step in saved, saved
  files = _test_files(synthetic_root)
  by_step = {}
  for step in saved:
    restored = lungjax.load(trained_workdir, step=step)
    assert restored.checkpoint_step == step
    by_step[step] = restored.predict(files, calibrated=False)
  np.testing.assert_array_equal(by_step[model.checkpoint_step], model.predict(files, calibrated=False))
  if len(saved) > 1:
    assert not np.allclose(by_step[saved[0]], by_step[saved[-1]])  # Other weights, other numbers.
  with pytest.raises(ValueError, match=r'has no checkpoint .*saved steps: \[' + ', '.join(map(str, saved))):
    lungjax.load(trained_workdir, step=saved[-1] + 1000)


def test_a_dicom_predicts_like_the_png_of_the_same_picture(model, tmp_path):
  dicom_test = pytest.importorskip('tests.dicom_test', reason='the [dicom] extra (pydicom) is not installed')
  grey = dicom_test.picture(5, 0)
  png = str(tmp_path / 'x.png')
  Image.fromarray(grey).save(png)
  dcm = dicom_test.write_dicom(tmp_path / 'x.dcm', grey.astype(np.uint16) * 16 + 3, RescaleSlope=0.5,
                               RescaleIntercept=10)
  by_png, by_dcm = model.predict([png, dcm])
  np.testing.assert_allclose(by_dcm, by_png, rtol=0, atol=1e-3)
  assert model.explain(dcm).shape == grey.shape


def test_float_images_read_on_pillows_scale_and_ambiguous_ones_are_refused(model, synthetic_root):
  """issue 26 High 6 / Medium 6: Pillow's own convert('F') (0..255) predicts like the 8-bit image; [0, 1], out of
  range, non-finite and empty images are refused naming the input."""
  files = _test_files(synthetic_root)
  greys = [Image.open(f).convert('L') for f in files]
  floats = [grey.convert('F') for grey in greys]
  assert floats[0].mode == 'F' and 1 < float(np.asarray(floats[0]).max()) <= 255
  np.testing.assert_array_equal(model.pixels(floats), model.pixels(greys))
  by_float, by_grey = model.predict(floats), model.predict(greys)
  np.testing.assert_array_equal(by_float, by_grey)
  np.testing.assert_array_equal(by_float.argmax(axis=1), by_grey.argmax(axis=1))
  assert not np.allclose(by_grey[0], by_grey[-1])  # Different pictures (a saturated white one each would not be).
  unit_HW = np.asarray(floats[0], np.float32) / 255.0
  with pytest.raises(ValueError, match=r'images_in\[1\]: a PIL image \(mode F, 48x40\).*all lie in 0\.\.1'):
    model.predict([floats[0], Image.fromarray(unit_HW)])
  with pytest.raises(ValueError, match=r'values span -3\.\.255.*0\.\.255 scale'):
    model.predict(Image.fromarray(np.where(unit_HW > 0.5, 255.0, -3.0).astype(np.float32)))
  one_nan_HW = np.asarray(floats[0], np.float32).copy()
  one_nan_HW[3, 4] = np.nan
  with pytest.raises(ValueError, match=r'1 of 1920 pixels .* not finite'):
    model.predict(Image.fromarray(one_nan_HW))
  with pytest.raises(ValueError, match=r'1920 of 1920 pixels .* not finite'):
    model.predict(Image.fromarray(np.full((40, 48), np.nan, np.float32)))
  with pytest.raises(ValueError, match=r'1920 of 1920 pixels .* not finite'):
    model.predict(Image.fromarray(np.full((40, 48), np.inf, np.float32)))
  black = model.predict(Image.fromarray(np.zeros((40, 48), np.float32)))  # All 0: black on either scale.
  np.testing.assert_array_equal(black, model.predict(np.zeros((40, 48), np.uint8)))
  for empty in (Image.new('L', (0, 0)), Image.new('RGB', (0, 7)), Image.new('F', (5, 0))):
    with pytest.raises(ValueError, match=rf'a PIL image \(mode {empty.mode}, {empty.width}x{empty.height}\) has no'):
      model.predict(empty)
  with pytest.raises(ValueError, match=r'images_in\[1\]: a PIL image \(mode L, 0x0\) has no pixels'):
    model.predict([greys[0], Image.new('L', (0, 0))])


def test_inputs_that_are_not_images_get_errors_that_say_so(model):
  """issue 26 Low 1: bytes, None and a numpy scalar are named as what they are."""
  with pytest.raises(TypeError, match=r'bytes, which could be a path or a file.s contents.*os\.fsdecode'):
    model.predict(b'/tmp/x.png')
  with pytest.raises(TypeError, match='images_in is None'):
    model.predict(None)
  with pytest.raises(TypeError, match=r'numpy scalar \(uint8'):
    model.predict(np.uint8(3))
  with pytest.raises(TypeError, match=r'images_in\[1\] is NoneType'):
    model.predict([np.zeros((8, 8), np.uint8), None])
  with pytest.raises(TypeError, match=r'images_in\[0\] is bytes'):
    model.predict([b'a.png'])
  with pytest.raises(ValueError, match=r'array of shape \(5,\)'):
    model.predict(np.zeros(5, np.uint8))
