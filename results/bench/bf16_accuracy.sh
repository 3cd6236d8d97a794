#!/usr/bin/env bash
# The study config in bfloat16 vs float32, seeds 0-2, the same validation split: bf16_accuracy.md (paired by seed).
# Usage (repository root): bash results/bench/bf16_accuracy.sh [--table-only]   (~1 h on 2 busy cores)
# Note: on a CPU without avx512_bf16 'auto' now computes a bfloat16 model's convs in float32 (see docs/speed.md);
# the committed table's bfloat16 runs were made before that change, with XLA's bfloat16 ops (conv_impl=xla).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=../shared/data/covid19-image-dataset
if [[ "${1:-}" != --table-only ]]; then
  for dtype in float32 bfloat16; do
    rm -rf "workdirs/acc-${dtype}"
    nice -n 10 python -m lungjax.main --config=configs/cnn.py --workdir="workdirs/acc-${dtype}" \
      --config.data.root="$DATA" --config.seeds=3 --config.model.dtype="$dtype"
  done
fi
python - <<'PY'
import json, numpy as np
dirs = {'float32': 'workdirs/acc-f32', 'bfloat16': 'workdirs/acc-bf16'}
import os
dirs = {k: (v if os.path.isdir(v) else f'workdirs/acc-{k}') for k, v in dirs.items()}
rows = ['| metric | float32 (seeds 0, 1, 2) | bfloat16 (seeds 0, 1, 2) | paired diff bf16 - f32: mean [min, max] |',
        '|---|---|---|---|']
for key in ('accuracy', 'macro_avg.recall', 'roc_auc.macro'):
  v = {k: np.array(json.load(open(f'{d}/seeds/metrics.json'))['summary'][key]['values']) for k, d in dirs.items()}
  d = v['bfloat16'] - v['float32']
  fmt = lambda a: f"{a.mean():.3f} ± {a.std(ddof=1):.3f} ({', '.join(f'{x:.3f}' for x in a)})"
  rows.append(f"| {key} | {fmt(v['float32'])} | {fmt(v['bfloat16'])} | {d.mean():+.3f} [{d.min():+.3f}, {d.max():+.3f}] |")
text = ('# bfloat16 vs float32, study config, validation split (50 images), 3 seeds\n\n' + '\n'.join(rows) +
        '\n\nCommand: `bash results/bench/bf16_accuracy.sh`. 3 paired seeds on 50 validation images: one image is '
        '0.02 accuracy; no claim of equality beyond that.\n')
open('results/bench/bf16_accuracy.md', 'w').write(text)
print(text)
PY
