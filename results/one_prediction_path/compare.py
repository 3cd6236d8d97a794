"""Compares two record.py outputs: the largest absolute difference of each path's probabilities.

  python results/one_prediction_path/compare.py BEFORE.json AFTER.json [OUT.json]

Exits 1 if any differs by more than 1e-6 (float32 tolerance) or the files differ; also checks, within AFTER, that
Model.predict (raw) and --mode=eval give the same numbers.
"""

import json
import sys

import numpy as np

KEYS = ('eval_tta0', 'eval_tta2', 'model_predict_raw', 'model_predict', 'model_probabilities', 'predict_files_raw')


def _array(value):
  return np.asarray(value['probabilities'] if isinstance(value, dict) else value, np.float64)


def main(before_path: str, after_path: str, out: str = '') -> int:
  before, after = json.load(open(before_path)), json.load(open(after_path))
  result = {'tolerance': 1e-6, 'n_images': len(after['eval_tta0']['files']),
            'same_files': before['eval_tta0']['files'] == after['eval_tta0']['files'], 'max_abs_difference': {}}
  for key in KEYS:
    result['max_abs_difference'][key] = float(np.abs(_array(before[key]) - _array(after[key])).max())
  result['after_model_predict_vs_eval'] = float(np.abs(_array(after['model_predict_raw']) -
                                                       _array(after['eval_tta0'])).max())
  result['ok'] = bool(result['same_files'] and max([*result['max_abs_difference'].values(),
                                                    result['after_model_predict_vs_eval']]) <= 1e-6)
  text = json.dumps(result, indent=1)
  print(text)
  if out:
    with open(out, 'w') as f:
      f.write(text + '\n')
  return 0 if result['ok'] else 1


if __name__ == '__main__':
  sys.exit(main(*sys.argv[1:4]))
