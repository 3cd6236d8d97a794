#!/usr/bin/env bash
# Regenerates results/bench/ on this machine (run from the repository root; ~20 minutes on 2 cores):
#   bash results/bench/regenerate.sh
# cnn.json: the study's config (its defaults), Keras alternating side by side, the real shared train folder.
# cnn-*.json: the same, one lowering choice changed each, on the synthetic batch only (no folder figures).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=../shared/data/covid19-image-dataset
python -m benchmarks.bench --config=configs/cnn.py --keras --config.data.root="${DATA}" --rounds=5 --steps=5
# glibc's malloc defaults (config.train.keep_freed_host_memory_gb=0): every step's buffers are mmap'd afresh.
python -m benchmarks.bench --config=configs/cnn.py --keras --config.name=cnn-glibc-malloc-defaults \
  --config.train.keep_freed_host_memory_gb=0 --rounds=5 --steps=5
# glibc keeps freed memory with no effective cap (64 GB): how far the heap grows without the watcher's trims.
python -m benchmarks.bench --config=configs/cnn.py --keras --config.name=cnn-keep-freed-no-cap \
  --config.train.keep_freed_host_memory_gb=64 --rounds=5 --steps=5
# glibc's defaults, but its malloc asks for transparent huge pages (a tunable read at process start).
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python -m benchmarks.bench --config=configs/cnn.py --keras \
  --config.name=cnn-malloc-hugepages --config.train.keep_freed_host_memory_gb=0 --rounds=5 --steps=5
# XLA's own ops instead of the C++ kernels (lungjax/cpu/kernels.cc): lax conv, reshape pool (the default until then).
python -m benchmarks.bench --config=configs/cnn.py --keras --config.name=cnn-xla --config.model.conv_impl=xla \
  --config.model.pool_impl=reshape --rounds=5 --steps=5
# The plain flax CNN: lax conv, reduce_window pool, XLA's default CPU options (YNNPACK fusions on).
python -m benchmarks.bench --config=configs/cnn.py --keras --config.name=cnn-plain-flax --config.model.conv_impl=xla \
  --config.model.pool_impl=reduce_window --config.train.cpu_compiler_options= --rounds=3 --steps=5
# The reshape pool alone, YNNPACK fusions left on.
python -m benchmarks.bench --config=configs/cnn.py --keras --config.name=cnn-ynn-on --config.train.cpu_compiler_options= \
  --config.model.conv_impl=xla --config.model.pool_impl=reshape --rounds=3 --steps=5
# im2col convs with matmul gradients (lungjax/models/layers.py) instead of lax.conv.
python -m benchmarks.bench --config=configs/cnn.py --keras --config.name=cnn-patches --config.model.conv_impl=patches \
  --config.model.pool_impl=reshape --rounds=3 --steps=5
# Data parallel over 2 forced host CPU devices (8 images each), to occupy both cores ('auto' is XLA's ops there).
XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m benchmarks.bench --config=configs/cnn.py --keras \
  --config.name=cnn-2-host-devices --rounds=3 --steps=5
# The same with Eigen single-threaded on each device: one core per device.
XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m benchmarks.bench --config=configs/cnn.py --keras \
  --config.name=cnn-2-host-devices-1-thread-each \
  --config.train.cpu_compiler_options='xla_cpu_experimental_ynn_fusion_type=;xla_cpu_multi_thread_eigen=false' \
  --rounds=3 --steps=5
# Issue 28, on a quiet CPU with avx512_bf16 (not yet run): bfloat16 and float32 vs Keras float32 + mixed_bfloat16,
# interleaved, median of per-round ratios; predict on 1,000 files (decode included).
python -m benchmarks.bench --config=configs/cnn.py --keras --config.name=cnn-bf16-kernels --config.model.dtype=bfloat16 \
  --rounds=7 --steps=10 --predict_folder=../shared/data/covid19-radiography-sample
python -m benchmarks.bench --config=configs/cnn.py --keras --config.name=cnn-f32-vs-both --rounds=7 --steps=10 \
  --predict_folder=../shared/data/covid19-radiography-sample
# Mixed precision on this CPU (bfloat16 compute, float32 params; 'auto' is XLA's ops there).
python -m benchmarks.bench --config=configs/cnn.py --keras --config.name=cnn-bfloat16 --config.model.dtype=bfloat16 \
  --rounds=3 --steps=5
# Each conv layer alone, XLA vs the kernels vs TensorFlow: conv_layers.json.
python -m benchmarks.conv_layers
# Every lowering and the Keras model alternating in one process: lowerings.json.
python -m benchmarks.lowerings
# The table of every JSON here: results/bench/summary.md.
python - <<'PY'
import glob, json, os
rows = ['| config | train img/s | Keras img/s | ratio vs Keras (per round) | epoch img/s | eval img/s | loader img/s '
        '| loader / train | compile s | peak RSS GB | load avg start → end |', '|' + '---|' * 11]
for path in sorted(glob.glob('results/bench/*.json'), key=lambda p: (os.path.basename(p) != 'cnn.json', p)):
  r = json.load(open(path))
  if 'train_images_per_s' not in r:  # scale.json: regenerate_scale.sh's figures (README_scale.md)
    continue
  get = lambda k: r.get(k, '–')
  rows.append(f"| {r['config']} | {get('train_images_per_s')} | {get('keras_train_images_per_s')} | "
              f"{get('ratio_vs_keras')} ({', '.join(map(str, r.get('ratio_vs_keras_rounds', [])))}) | "
              f"{get('epoch_images_per_s')} | {get('eval_images_per_s')} | {get('loader_images_per_s')} | "
              f"{get('loader_vs_train_step')} | {get('compile_train_s')} | {get('peak_rss_gb')} | "
              f"{r['machine_start']['load_average_1_5_15'][0]} → {r['machine_end']['load_average_1_5_15'][0]} |")
open('results/bench/summary.md', 'w').write('\n'.join(rows) + '\n')
print('\n'.join(rows))
PY
