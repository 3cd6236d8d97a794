"""Classify image files with a trained workdir: one JSON line per file, optional Grad-CAM overlays.

python -m lungjax.tools.predict --workdir=W [--gradcam_dir=DIR] IMAGE_OR_FOLDER...

Folders are walked recursively for .jpg/.jpeg/.png files. A file that cannot be read prints a line with `file`
and `error` and the others still run. Exit code 0 if at least one image was classified, else 1.

Every line is valid UTF-8 JSON. A file name whose bytes are not UTF-8 (Python holds them as lone surrogates, which
JSON readers reject) is written with U+FFFD for each such byte, and its exact bytes follow as `file_bytes_hex`
(`bytes.fromhex(line['file_bytes_hex'])` is the path to open; the same for `gradcam`).

A blank, low-contrast or tiny image (a side under 32 px) is still classified, and its line carries `warnings` saying
so: a confident answer about little information.

`probabilities` are scaled by the temperature in the workdir's calibration.json (`temperature`, 1.0 without one);
`raw_probabilities` are the model's softmax.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from absl import app, flags  # pylint: disable=g-multiple-import

from lungjax import calibration, inference
from lungjax.explain import gallery as explain
from lungjax.runtime import progress, workdir as workdir_lib
from lungjax.data import folders, images


def expand_inputs(inputs: Sequence[str]) -> list[tuple[str, str]]:
  """Lists (file, overlay name) per input: files as given, folders walked recursively (image files only).

  A folder with no images stays in the list as itself, so that it reports an error.
  """
  listed = []
  for given in inputs:
    if not os.path.isdir(given):
      listed.append((given, os.path.basename(given)))
      continue
    top = os.path.basename(os.path.abspath(given))  # '..' names the parent: no overlay lands above gradcam_dir.
    found = []
    for dirpath, dirnames, filenames in os.walk(given):
      dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
      found += [os.path.join(dirpath, n) for n in sorted(filenames)
                if folders.is_image_file(n) and not n.startswith('.')]
    listed += [(path, os.path.join(top, os.path.relpath(path, given))) for path in found] or [(given, top)]
  return listed


def predict_files(model: inference.Model, files: Sequence[tuple[str, str]], *,
                  gradcam_dir: str = '') -> Iterator[dict[str, Any]]:
  """Yields, in order, one dict per file: {'file', 'class', 'probabilities', ...} or {'file', 'error'}.

  A classified file's 'probabilities' are softmax(log(raw) / temperature), the same as softmax(logits /
  temperature), with the run's served temperature (model.temperature); 'raw_probabilities' (the model's softmax)
  and 'temperature' come with them, and 'gradcam' too. Files are decoded and classified model.batch_size at a
  time, the last batch zero-padded (one compile). With gradcam_dir, each image's Grad-CAM overlay of its predicted
  class is written under it, named after the whole file name ('x.jpg' → 'x.jpg.gradcam.png'); ForeignFileError
  (before anything runs) when one would land on an input or on a file there that lungjax did not write
  (workdir.claim_outputs).
  """
  classes, batch_size, temperature = model.classes, model.batch_size, model.temperature
  names = explain.overlay_names([name for _, name in files])
  if gradcam_dir:  # Before any work: no overlay may land on an input or on a file lungjax did not write.
    workdir_lib.claim_outputs(gradcam_dir, names, inputs=[path for path, _ in files])
  threads = model.config.data.decode_threads or os.cpu_count() or 1
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    starts = range(0, len(files), batch_size)
    for start in progress.progress(starts, len(starts), 'predicting'):
      chunk = files[start:start + batch_size]
      futures = [pool.submit(inference.read_image, path, model.image_size) for path, _ in chunk]
      pixels, errors, warnings = {}, {}, {}
      for index, future in enumerate(futures):
        try:
          loaded = future.result()
          pixels[index], warnings[index] = loaded.pixels_HWC, loaded.warnings
        except images.BadImageError as error:
          errors[index] = str(error)
      if pixels:
        images_BHWC = np.stack(list(pixels.values()))
        if gradcam_dir:  # Each map of its image's predicted class.
          probs_BC, heatmaps_BHW = model.explain_pixels(images_BHWC, np.full(len(pixels), -1, np.int32))
        else:
          probs_BC = model.probabilities(images_BHWC)
        calibrated_BC = calibration.scale_probabilities(probs_BC, temperature)
      rows = {index: row for row, index in enumerate(pixels)}
      for index, (path, _) in enumerate(chunk):
        if index in errors:
          yield {'file': path, 'error': errors[index]}
          continue
        row = rows[index]
        line = {'file': path, 'class': classes[int(calibrated_BC[row].argmax())],
                'probabilities': {name: float(p) for name, p in zip(classes, calibrated_BC[row])},
                'raw_probabilities': {name: float(p) for name, p in zip(classes, probs_BC[row])},
                'temperature': temperature}
        if warnings[index]:  # Blank, low-contrast or tiny: a confident answer about little information.
          line['warnings'] = list(warnings[index])
        if gradcam_dir:
          line['gradcam'] = os.path.join(gradcam_dir, names[start + index])
          explain.save_overlay(pixels[index], heatmaps_BHW[row], line['gradcam'], root=gradcam_dir)
        yield line


def json_line(line: dict[str, Any]) -> str:
  """One JSON line for `line` that any JSON reader accepts: a str value that is not valid Unicode (a path whose bytes
  are not UTF-8) is written with U+FFFD for each bad byte, followed by `<key>_bytes_hex` (its bytes in hex)."""
  out: dict[str, Any] = {}
  for key, value in line.items():
    if isinstance(value, str):
      try:
        value.encode('utf-8')
      except UnicodeEncodeError:
        try:
          raw = os.fsencode(value)
        except UnicodeEncodeError:  # A surrogate that no file-name decoding made.
          raw = value.encode('utf-8', 'surrogatepass')
        out[key], out[f'{key}_bytes_hex'] = raw.decode('utf-8', 'replace'), raw.hex()
        continue
    out[key] = value
  return json.dumps(out)


def predict_cli(workdir: str, inputs: Sequence[str], gradcam_dir: str = '') -> int:
  """Prints one JSON line per file of `inputs`; returns the exit code (0 if at least one image ran, else 1).

  Probabilities are scaled by the workdir's calibration.json temperature (1.0 where it has none).
  """
  model = inference.load(workdir)  # The run's own config.json builds the model.
  classified = 0
  for line in predict_files(model, expand_inputs(inputs), gradcam_dir=gradcam_dir):
    print(json_line(line), flush=True)
    classified += 'error' not in line
  return 0 if classified else 1


def main(argv: Sequence[str]) -> int:
  """Classifies the files and folders named after the flags."""
  if len(argv) < 2:
    raise app.UsageError('name at least one image file or folder to classify')
  return predict_cli(flags.FLAGS.workdir, argv[1:], flags.FLAGS.gradcam_dir)


if __name__ == '__main__':  # The command's flags, defined only when run: an importer keeps lungjax.main's --workdir.
  flags.DEFINE_string('workdir', None, 'A folder that lungjax.main trained in (its config.json and checkpoints).')
  flags.DEFINE_string('gradcam_dir', '', 'If set, write a Grad-CAM overlay PNG per image here.')
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
