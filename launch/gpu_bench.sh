#!/usr/bin/env bash
# Benchmarks the study's config on a GPU in one call (well under 10 minutes on an H100/H200):
#   bash launch/gpu_bench.sh [DATA_ROOT]
# Installs lungjax with jax[cuda12] (pyproject's `cuda` extra) unless jax already sees a GPU, then runs
# `python -m benchmarks.bench` for configs/cnn.py in float32 and in bfloat16 (config.model.dtype), writing
# results/bench/cnn-gpu.json and results/bench/cnn-gpu-bf16.json. Without DATA_ROOT (a folder holding train/<class>/)
# it writes a synthetic folder of 240 random 512x512 JPEGs so that the epoch, loader and eval figures exist too.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3 XLA_PYTHON_CLIENT_PREALLOCATE=false

has_gpu() { python -c "import jax, sys; sys.exit(0 if jax.default_backend() == 'gpu' else 1)" 2>/dev/null; }
if ! has_gpu; then
  echo "installing lungjax with jax[cuda12] ..."
  timeout 300 python -m pip install -q -e '.[cuda]'
fi
has_gpu || { echo "jax sees no GPU after the install: $(python -c 'import jax; print(jax.devices())')" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

DATA_ROOT="${1:-}"
if [[ -z "${DATA_ROOT}" ]]; then
  DATA_ROOT="$(mktemp -d)/synthetic"
  python - "${DATA_ROOT}" <<'PY'
import os, sys
import numpy as np
from PIL import Image
root, rng = sys.argv[1], np.random.default_rng(0)
for name in ('Covid', 'Normal', 'Viral Pneumonia'):
  os.makedirs(os.path.join(root, 'train', name))
  for index in range(80):
    pixels = rng.integers(0, 256, (512, 512), np.uint8)
    Image.fromarray(pixels).save(os.path.join(root, 'train', name, f'{index:03d}.jpeg'), quality=90)
print('synthetic data:', root)
PY
fi

for DTYPE in float32 bfloat16; do
  NAME=cnn-gpu; [[ "${DTYPE}" == bfloat16 ]] && NAME=cnn-gpu-bf16
  timeout 240 python -m benchmarks.bench --config=configs/cnn.py --config.name="${NAME}" \
    --config.model.dtype="${DTYPE}" --config.data.root="${DATA_ROOT}" --rounds=3 --steps=50 --warmup_steps=5 \
    --out_dir=results/bench
done
echo "wrote results/bench/cnn-gpu.json results/bench/cnn-gpu-bf16.json"
