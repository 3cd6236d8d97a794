"""Records every prediction path's probabilities of one tiny trained run, at full float32 precision, as JSON.

  python results/one_prediction_path/record.py WORKDIR DATA OUT.json

WORKDIR: trained here with the tiny config on DATA (synthetic striped images, tests/conftest.py) if it has no
config.json yet; DATA/test holds 5 images per class (15: the last batch of 4 padded). Recorded: --mode=eval's
probabilities (plain, and with config.eval.tta_views=2), Model.predict (raw and calibrated), Model.probabilities of
the decoded pixels, predict.predict_files' raw probabilities. Run once with the code before a change and once after
(compare.py): the same workdir, so any difference is the code's.
"""

import json
import os
import sys

import numpy as np

from configs import tiny
from lungjax import evaluate, inference, train
from lungjax.tools import predict
from tests.conftest import write_image_folder


def main(workdir: str, data: str, out: str) -> None:
  if not os.path.isdir(os.path.join(data, 'train')):
    write_image_folder(os.path.join(data, 'train'), 12, seed=0)
    write_image_folder(os.path.join(data, 'test'), 5, seed=1)
  config = tiny.get_config()
  config.data.root = data
  if not os.path.exists(os.path.join(workdir, 'config.json')):
    train.train_and_evaluate(config, workdir)
  captured = []
  real_report = evaluate.report_predictions
  def capture(probabilities_NC, loaded, *args, **kwargs):
    captured.append((list(loaded.decoded.paths), np.asarray(probabilities_NC)))
    return real_report(probabilities_NC, loaded, *args, **kwargs)
  evaluate.report_predictions = capture
  record = {}
  for views in (0, 2):
    config.eval.dir = os.path.join(data, 'test')
    config.eval.tta_views = views
    evaluate.evaluate_checkpoint(config, workdir)
    paths, probabilities_NC = captured.pop()
    record[f'eval_tta{views}'] = {'files': paths, 'probabilities': probabilities_NC.tolist()}
  files = record['eval_tta0']['files']
  model = inference.load(workdir)
  record['model_predict_raw'] = model.predict(files, calibrated=False).tolist()
  record['model_predict'] = model.predict(files).tolist()
  record['model_probabilities'] = model.probabilities(model.pixels(files)).tolist()
  record['predict_files_raw'] = [list(line['raw_probabilities'].values())
                                 for line in predict.predict_files(model, [(f, f) for f in files])]
  record['checkpoint_step'] = model.checkpoint_step
  with open(out, 'w') as f:
    json.dump(record, f, indent=1)


if __name__ == '__main__':
  main(*sys.argv[1:4])
