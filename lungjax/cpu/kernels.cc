// XLA:CPU FFI handlers for the study CNN's hot spots, same maths as jax.lax:
// - stride-1 2-D conv + bias (NHWC input, HWIO kernel): forward and input gradient are im2col + OpenBLAS sgemm
//   over blocks of output rows that stay in cache; kernel and bias gradients are the same patches transposed
//   times dY, and the row sums of dY, in the same pass;
// - the gradient of relu then 2x2 / stride-2 max-pool in one pass (ties share the gradient, as jnp.max's does).
// Blocks run on XLA's intra-op thread pool with single-threaded sgemm.
// With the handlers' bf16 attribute the convs round x, kernel and dY to bfloat16 and sum in float32
// (kernels_bf16.inc: vdpbf16ps where the CPU has avx512_bf16, or the same loops emulated in scalar code for tests).
// Portable C++17: the AVX-512 direct conv below is compiled only for x86-64 (and not with -DLUNGJAX_PORTABLE); other
// CPUs take the im2col + sgemm path for every conv.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cblas.h"
#include "xla/ffi/api/ffi.h"

#if defined(__x86_64__) && !defined(LUNGJAX_PORTABLE)
#define LUNGJAX_AVX512_DIRECT 1
#include <immintrin.h>
#else
#define LUNGJAX_AVX512_DIRECT 0
#endif

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kTargetBlockPositions = 1024;  // output positions per sgemm: the patch block stays in L2/L3

// x [n, h, w, c] (unpadded), kernel [kh, kw, c, o], y [n, oh, ow, o] with oh = h + pad_top + pad_bottom - kh + 1.
struct Geometry {
  int64_t n, h, w, c, kh, kw, o, oh, ow, pad_top, pad_left;
  int64_t PatchSize() const { return kh * kw * c; }
  int64_t RowsPerBlock() const { return std::max<int64_t>(1, std::min(oh, kTargetBlockPositions / ow)); }
  int64_t BlocksPerImage() const { return (oh + RowsPerBlock() - 1) / RowsPerBlock(); }
};

// Patches of output rows [row0, row0 + rows) of image b: [rows * ow, kh * kw * c], taps ordered (i, j, c).
void Im2col(const float* x, const Geometry& g, int64_t b, int64_t row0, int64_t rows, float* cols) {
  const int64_t tap_row = g.kw * g.c;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t oh = row0 + r;
    for (int64_t ow = 0; ow < g.ow; ++ow) {
      float* dst = cols + (r * g.ow + ow) * g.PatchSize();
      const int64_t iw0 = ow - g.pad_left;
      for (int64_t i = 0; i < g.kh; ++i, dst += tap_row) {
        const int64_t ih = oh + i - g.pad_top;
        if (ih < 0 || ih >= g.h) {
          std::memset(dst, 0, tap_row * sizeof(float));
          continue;
        }
        const float* src = x + ((b * g.h + ih) * g.w) * g.c;
        if (iw0 >= 0 && iw0 + g.kw <= g.w) {
          std::memcpy(dst, src + iw0 * g.c, tap_row * sizeof(float));
          continue;
        }
        for (int64_t j = 0; j < g.kw; ++j) {
          const int64_t iw = iw0 + j;
          if (iw < 0 || iw >= g.w) {
            std::memset(dst + j * g.c, 0, g.c * sizeof(float));
          } else {
            std::memcpy(dst + j * g.c, src + iw * g.c, g.c * sizeof(float));
          }
        }
      }
    }
  }
}

// Runs body(worker, task) for task in [0, num_tasks) on the caller and the pool. Workers claim tasks from a
// shared counter, so the caller finishes the work alone when the pool is busy (no deadlock when every pool
// thread is itself inside such a call); worker ids are < max_workers and distinct among concurrent workers.
template <typename Body>
void ParallelFor(ffi::ThreadPool& pool, int64_t num_tasks, int64_t max_workers, Body body) {
  struct Shared {
    std::atomic<int64_t> next_task{0}, next_worker{0}, done{0};
    std::mutex mutex;
    std::condition_variable all_done;
  };
  auto shared = std::make_shared<Shared>();
  auto work = [shared, num_tasks, max_workers, body]() {
    const int64_t worker = shared->next_worker.fetch_add(1);
    if (worker >= max_workers) return;
    int64_t finished = 0;
    for (int64_t task; (task = shared->next_task.fetch_add(1)) < num_tasks; ++finished) body(worker, task);
    if (finished && shared->done.fetch_add(finished) + finished == num_tasks) {
      std::lock_guard<std::mutex> lock(shared->mutex);
      shared->all_done.notify_all();
    }
  };
  for (int64_t k = 1; k < max_workers; ++k) {
    auto task = work;
    pool.Schedule(std::move(task));
  }
  work();
  std::unique_lock<std::mutex> lock(shared->mutex);
  shared->all_done.wait(lock, [&] { return shared->done.load() == num_tasks; });
}

int64_t Workers(ffi::ThreadPool& pool, int64_t num_tasks) {
  return std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), num_tasks));
}


#if LUNGJAX_AVX512_DIRECT
// Direct conv + bias with AVX-512 (chosen at run time when the CPU has it and o is a multiple of 16): for one
// output row, a block of P positions x NV vectors of 16 output features stays in registers while the taps and input
// channels stream by (each input value broadcast, each kernel row loaded once per block), as oneDNN's direct convs
// do. Positions whose window leaves the input on the left or right take the one-position variant with bounds.
template <int NV, int P>
__attribute__((target("avx512f"))) void DirectBlock(const Geometry& g, const float* x, const float* kernel,
                                                    const float* bias, float* y, int64_t b, int64_t oh, int64_t ow0,
                                                    int64_t oc0) {
  __m512 acc[P][NV];
  for (int v = 0; v < NV; ++v) {
    const __m512 init = bias != nullptr ? _mm512_loadu_ps(bias + oc0 + 16 * v) : _mm512_setzero_ps();
    for (int p = 0; p < P; ++p) acc[p][v] = init;
  }
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t ih = oh + i - g.pad_top;
    if (ih < 0 || ih >= g.h) continue;
    const float* x_row = x + ((b * g.h + ih) * g.w) * g.c;
    for (int64_t j = 0; j < g.kw; ++j) {
      const float* xp = x_row + (ow0 + j - g.pad_left) * g.c;
      const float* wp = kernel + ((i * g.kw + j) * g.c) * g.o + oc0;
      for (int64_t ic = 0; ic < g.c; ++ic, wp += g.o) {
        __m512 wv[NV];
        for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_ps(wp + 16 * v);
        for (int p = 0; p < P; ++p) {
          const __m512 xb = _mm512_set1_ps(xp[p * g.c + ic]);
          for (int v = 0; v < NV; ++v) acc[p][v] = _mm512_fmadd_ps(xb, wv[v], acc[p][v]);
        }
      }
    }
  }
  float* out = y + ((b * g.oh + oh) * g.ow + ow0) * g.o + oc0;
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(out + p * g.o + 16 * v, acc[p][v]);
}

template <int NV>
__attribute__((target("avx512f"))) void DirectOne(const Geometry& g, const float* x, const float* kernel,
                                                  const float* bias, float* y, int64_t b, int64_t oh, int64_t ow,
                                                  int64_t oc0) {
  __m512 acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = bias != nullptr ? _mm512_loadu_ps(bias + oc0 + 16 * v) : _mm512_setzero_ps();
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t ih = oh + i - g.pad_top;
    if (ih < 0 || ih >= g.h) continue;
    for (int64_t j = 0; j < g.kw; ++j) {
      const int64_t iw = ow + j - g.pad_left;
      if (iw < 0 || iw >= g.w) continue;
      const float* xp = x + ((b * g.h + ih) * g.w + iw) * g.c;
      const float* wp = kernel + ((i * g.kw + j) * g.c) * g.o + oc0;
      for (int64_t ic = 0; ic < g.c; ++ic, wp += g.o) {
        const __m512 xb = _mm512_set1_ps(xp[ic]);
        for (int v = 0; v < NV; ++v) acc[v] = _mm512_fmadd_ps(xb, _mm512_loadu_ps(wp + 16 * v), acc[v]);
      }
    }
  }
  float* out = y + ((b * g.oh + oh) * g.ow + ow) * g.o + oc0;
  for (int v = 0; v < NV; ++v) _mm512_storeu_ps(out + 16 * v, acc[v]);
}

// One output row, every feature: 24 accumulators per block (NV vectors x P positions).
template <int NV, int P>
void DirectRowChunk(const Geometry& g, const float* x, const float* kernel, const float* bias, float* y, int64_t b,
                    int64_t oh, int64_t oc0) {
  const int64_t lo = std::min(g.ow, g.pad_left), hi = std::max(lo, std::min(g.ow, g.w - g.kw + 1 + g.pad_left));
  int64_t ow = 0;
  for (; ow < lo; ++ow) DirectOne<NV>(g, x, kernel, bias, y, b, oh, ow, oc0);
  for (; ow + P <= hi; ow += P) DirectBlock<NV, P>(g, x, kernel, bias, y, b, oh, ow, oc0);
  for (; ow < g.ow; ++ow) DirectOne<NV>(g, x, kernel, bias, y, b, oh, ow, oc0);
}

void DirectRow(const Geometry& g, const float* x, const float* kernel, const float* bias, float* y, int64_t b,
               int64_t oh) {
  int64_t oc0 = 0;
  for (; oc0 + 64 <= g.o; oc0 += 64) DirectRowChunk<4, 6>(g, x, kernel, bias, y, b, oh, oc0);
  if (oc0 + 32 <= g.o) {
    DirectRowChunk<2, 12>(g, x, kernel, bias, y, b, oh, oc0);
    oc0 += 32;
  }
  if (oc0 < g.o) DirectRowChunk<1, 24>(g, x, kernel, bias, y, b, oh, oc0);
}

bool UseDirect(const Geometry& g) {
  static const bool has_avx512 = __builtin_cpu_supports("avx512f");
  return has_avx512 && g.o % 16 == 0;
}
#endif  // LUNGJAX_AVX512_DIRECT

// ---- Bfloat16 compute (inputs rounded to bfloat16, float32 sums): kernels_bf16.inc, packing here. ----
// The mode each conv handler gets in its `bf16` attribute.
constexpr int64_t kFloat32 = 0, kBf16Native = 1, kBf16Emulated = 2;

bool CpuHasBf16Dot() {
#if defined(__x86_64__) && !defined(LUNGJAX_PORTABLE)
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
  return has;
#else
  return false;
#endif
}

// Round to nearest even, as vcvtneps2bf16 does; NaN stays a (quiet) NaN.
inline uint16_t FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float Bf16ToFloat(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// x [n, h, w, c] float32 → [n, h, w, cp] bfloat16 (cp = c rounded up to even, the extra channel 0).
std::vector<uint16_t> PackInput(ffi::ThreadPool& pool, const Geometry& g, int64_t cp, const float* x) {
  std::vector<uint16_t> xb(g.n * g.h * g.w * cp, 0);
  const int64_t rows = g.n * g.h;
  ParallelFor(pool, rows, Workers(pool, rows), [&](int64_t, int64_t row) {
    const float* src = x + row * g.w * g.c;
    uint16_t* dst = xb.data() + row * g.w * cp;
    for (int64_t iw = 0; iw < g.w; ++iw)
      for (int64_t ic = 0; ic < g.c; ++ic) dst[iw * cp + ic] = FloatToBf16(src[iw * g.c + ic]);
  });
  return xb;
}

// kernel [kh, kw, c, o] float32 → [kh, kw, cp / 2, o, 2] bfloat16.
std::vector<uint16_t> PackKernel(const Geometry& g, int64_t cp, const float* kernel) {
  std::vector<uint16_t> wp(g.kh * g.kw * cp * g.o, 0);
  for (int64_t t = 0; t < g.kh * g.kw; ++t)
    for (int64_t ic = 0; ic < g.c; ++ic)
      for (int64_t oc = 0; oc < g.o; ++oc)
        wp[((t * (cp / 2) + ic / 2) * g.o + oc) * 2 + ic % 2] = FloatToBf16(kernel[(t * g.c + ic) * g.o + oc]);
  return wp;
}

// Values rounded to bfloat16 and back: the float32 path then computes what bfloat16 inputs give (every product
// of two bfloat16 is exact in float32), for shapes the bfloat16 loops do not cover (o not a multiple of 16).
std::vector<float> RoundedToBf16(const float* x, int64_t size) {
  std::vector<float> r(size);
  for (int64_t k = 0; k < size; ++k) r[k] = Bf16ToFloat(FloatToBf16(x[k]));
  return r;
}

void ConvForward(ffi::ThreadPool& pool, const Geometry& g, const float* x, const float* kernel, const float* bias,
                 float* y);

namespace bf16_emulated {
#define LUNGJAX_BF16_NATIVE 0
#include "kernels_bf16.inc"
#undef LUNGJAX_BF16_NATIVE
}  // namespace bf16_emulated

#if defined(__x86_64__) && !defined(LUNGJAX_PORTABLE)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bf16")
namespace bf16_native {
#define LUNGJAX_BF16_NATIVE 1
#include "kernels_bf16.inc"
#undef LUNGJAX_BF16_NATIVE
}  // namespace bf16_native
#pragma GCC pop_options
#endif

// conv + bias with bfloat16 inputs (mode kBf16Native or kBf16Emulated).
void ConvForwardBf16(ffi::ThreadPool& pool, const Geometry& g, const float* x, const float* kernel,
                     const float* bias, float* y, int64_t mode) {
  if (g.o % 16 != 0) {
    const std::vector<float> xr = RoundedToBf16(x, g.n * g.h * g.w * g.c);
    const std::vector<float> kr = RoundedToBf16(kernel, g.kh * g.kw * g.c * g.o);
    ConvForward(pool, g, xr.data(), kr.data(), bias, y);
    return;
  }
  const int64_t cp = g.c + g.c % 2;
  const std::vector<uint16_t> xb = PackInput(pool, g, cp, x), wp = PackKernel(g, cp, kernel);
#if defined(__x86_64__) && !defined(LUNGJAX_PORTABLE)
  if (mode == kBf16Native) {
    bf16_native::ConvRows(pool, g, cp, xb.data(), wp.data(), bias, y);
    return;
  }
#endif
  bf16_emulated::ConvRows(pool, g, cp, xb.data(), wp.data(), bias, y);
}

// y = conv(x, kernel) + bias: direct (AVX-512) by output rows, else per block, patches [m, kh*kw*c] @ kernel
// [kh*kw*c, o] added to rows of bias.
void ConvForward(ffi::ThreadPool& pool, const Geometry& g, const float* x, const float* kernel, const float* bias,
                 float* y) {
#if LUNGJAX_AVX512_DIRECT
  if (UseDirect(g)) {
    const int64_t rows = g.n * g.oh;
    ParallelFor(pool, rows, Workers(pool, rows), [&](int64_t, int64_t row) {
      DirectRow(g, x, kernel, bias, y, row / g.oh, row % g.oh);
    });
    return;
  }
#endif
  const int64_t blocks = g.BlocksPerImage(), rows_per_block = g.RowsPerBlock(), tasks = g.n * blocks;
  const int64_t workers = Workers(pool, tasks);
  // Every buffer is allocated here, on the calling thread, so that an allocation failure is an error, not a crash.
  std::vector<std::vector<float>> cols(workers, std::vector<float>(rows_per_block * g.ow * g.PatchSize()));
  ParallelFor(pool, tasks, workers, [&](int64_t worker, int64_t task) {
    const int64_t b = task / blocks, row0 = (task % blocks) * rows_per_block;
    const int64_t rows = std::min(rows_per_block, g.oh - row0), m = rows * g.ow;
    std::vector<float>& buffer = cols[worker];
    Im2col(x, g, b, row0, rows, buffer.data());
    float* y_block = y + ((b * g.oh + row0) * g.ow) * g.o;
    if (bias != nullptr) {
      for (int64_t r = 0; r < m; ++r) std::memcpy(y_block + r * g.o, bias, g.o * sizeof(float));
    }
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, g.o, g.PatchSize(), 1.0f, buffer.data(),
                      g.PatchSize(), kernel, g.o, bias != nullptr ? 1.0f : 0.0f, y_block, g.o);
  });
}

// dkernel = sum over blocks of patches^T @ dY, dbias = sum of dY's rows. The blocks are cut into a fixed number
// of contiguous slices, each summed in order into its own partial (the last o entries hold dbias), and the
// partials are added in slice order: the same bits whichever threads ran which slices.
constexpr int64_t kKernelGradSlices = 16;

void ConvKernelGrad(ffi::ThreadPool& pool, const Geometry& g, const float* x, const float* dy, float* dkernel,
                    float* dbias) {
  const int64_t blocks = g.BlocksPerImage(), rows_per_block = g.RowsPerBlock(), tasks = g.n * blocks;
  const int64_t slices = std::min(kKernelGradSlices, tasks), size = g.PatchSize() * g.o;
  const int64_t workers = Workers(pool, slices);
  std::vector<std::vector<float>> cols(workers, std::vector<float>(rows_per_block * g.ow * g.PatchSize()));
  std::vector<std::vector<float>> partial(slices, std::vector<float>(size + g.o, 0.0f));
  ParallelFor(pool, slices, workers, [&](int64_t worker, int64_t slice) {
    std::vector<float>& buffer = cols[worker];
    float* sums = partial[slice].data();
    float* bias_sums = sums + size;
    for (int64_t task = slice * tasks / slices; task < (slice + 1) * tasks / slices; ++task) {
      const int64_t b = task / blocks, row0 = (task % blocks) * rows_per_block;
      const int64_t rows = std::min(rows_per_block, g.oh - row0), m = rows * g.ow;
      Im2col(x, g, b, row0, rows, buffer.data());
      const float* dy_block = dy + ((b * g.oh + row0) * g.ow) * g.o;
      scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g.PatchSize(), g.o, m, 1.0f, buffer.data(),
                        g.PatchSize(), dy_block, g.o, 1.0f, sums, g.o);
      for (int64_t r = 0; r < m; ++r) {
        const float* row = dy_block + r * g.o;
        for (int64_t k = 0; k < g.o; ++k) bias_sums[k] += row[k];
      }
    }
  });
  std::fill(dkernel, dkernel + size, 0.0f);
  std::fill(dbias, dbias + g.o, 0.0f);
  for (const auto& p : partial) {
    for (int64_t k = 0; k < size; ++k) dkernel[k] += p[k];
    for (int64_t k = 0; k < g.o; ++k) dbias[k] += p[size + k];
  }
}

// The kernel and bias gradients with bfloat16 x and dY (float32 sums; dbias sums dY as given, in float32).
void ConvKernelGradBf16(ffi::ThreadPool& pool, const Geometry& g, const float* x, const float* dy, float* dkernel,
                        float* dbias, int64_t mode) {
  const int64_t size = g.PatchSize() * g.o, rows = g.n * g.oh;
  const int64_t slices = std::min(kKernelGradSlices, rows);
  std::vector<std::vector<float>> bias_partials(slices, std::vector<float>(g.o, 0.0f));
  ParallelFor(pool, slices, Workers(pool, slices), [&](int64_t, int64_t slice) {
    float* sums = bias_partials[slice].data();
    for (int64_t r = slice * rows / slices * g.ow; r < (slice + 1) * rows / slices * g.ow; ++r)
      for (int64_t k = 0; k < g.o; ++k) sums[k] += dy[r * g.o + k];
  });
  if (g.o % 16 != 0) {
    const std::vector<float> xr = RoundedToBf16(x, g.n * g.h * g.w * g.c), dyr = RoundedToBf16(dy, rows * g.ow * g.o);
    ConvKernelGrad(pool, g, xr.data(), dyr.data(), dkernel, dbias);
  } else {
    const int64_t ow2 = (g.ow + 1) / 2, wpad = 2 * ow2 + g.kw - 1;
    std::vector<uint16_t> xt(g.n * g.h * g.c * wpad, 0), dyp(rows * ow2 * g.o * 2, 0);
    const int64_t in_rows = g.n * g.h;
    ParallelFor(pool, in_rows, Workers(pool, in_rows), [&](int64_t, int64_t row) {
      const float* src = x + row * g.w * g.c;
      uint16_t* dst = xt.data() + row * g.c * wpad + g.pad_left;
      for (int64_t iw = 0; iw < g.w; ++iw)
        for (int64_t ic = 0; ic < g.c; ++ic) dst[ic * wpad + iw] = FloatToBf16(src[iw * g.c + ic]);
    });
    ParallelFor(pool, rows, Workers(pool, rows), [&](int64_t, int64_t row) {
      const float* src = dy + row * g.ow * g.o;
      uint16_t* dst = dyp.data() + row * ow2 * g.o * 2;
      for (int64_t ow = 0; ow < g.ow; ++ow)
        for (int64_t oc = 0; oc < g.o; ++oc) dst[((ow / 2) * g.o + oc) * 2 + ow % 2] = FloatToBf16(src[ow * g.o + oc]);
    });
    std::vector<std::vector<float>> partials(slices, std::vector<float>(size, 0.0f));
#if defined(__x86_64__) && !defined(LUNGJAX_PORTABLE)
    if (mode == kBf16Native) {
      bf16_native::GradRows(pool, g, wpad, ow2, xt.data(), dyp.data(), partials);
    } else {
      bf16_emulated::GradRows(pool, g, wpad, ow2, xt.data(), dyp.data(), partials);
    }
#else
    bf16_emulated::GradRows(pool, g, wpad, ow2, xt.data(), dyp.data(), partials);
#endif
    std::fill(dkernel, dkernel + size, 0.0f);
    for (const auto& p : partials)
      for (int64_t k = 0; k < size; ++k) dkernel[k] += p[k];
  }
  std::fill(dbias, dbias + g.o, 0.0f);
  for (const auto& p : bias_partials)
    for (int64_t k = 0; k < g.o; ++k) dbias[k] += p[k];
}

// dz of y = max_pool_2x2(relu(z)) for dY: within each window the positions equal to the max share dY equally
// (jnp.max's gradient), times relu's (z > 0); a last odd row or column (dropped by the pool) gets 0.
void ReluMaxPoolGrad(ffi::ThreadPool& pool, int64_t n, int64_t h, int64_t w, int64_t c, const float* z,
                     const float* dy, float* dz) {
  const int64_t ph = h / 2, pw = w / 2, tasks = n * ph;
  ParallelFor(pool, tasks, Workers(pool, tasks), [&](int64_t, int64_t task) {
    const int64_t b = task / ph, row = task % ph;
    const float* __restrict z0 = z + ((b * h + 2 * row) * w) * c;
    const float* __restrict z1 = z0 + w * c;
    float* __restrict d0 = dz + ((b * h + 2 * row) * w) * c;
    float* __restrict d1 = d0 + w * c;
    const float* __restrict g = dy + ((b * ph + row) * pw) * c;
    for (int64_t col = 0; col < pw; ++col, g += c) {
      const int64_t at = 2 * col * c;
#pragma GCC ivdep
      for (int64_t k = 0; k < c; ++k) {  // branch-free, so that the compiler vectorizes it over channels
        const float a = z0[at + k], bb = z0[at + c + k], cc = z1[at + k], dd = z1[at + c + k];
        const float ra = a > 0.0f ? a : 0.0f, rb = bb > 0.0f ? bb : 0.0f;
        const float rc = cc > 0.0f ? cc : 0.0f, rd = dd > 0.0f ? dd : 0.0f;
        const float top_ab = ra > rb ? ra : rb, top_cd = rc > rd ? rc : rd;
        const float top = top_ab > top_cd ? top_ab : top_cd;
        const float ia = ra == top ? 1.0f : 0.0f, ib = rb == top ? 1.0f : 0.0f;
        const float ic = rc == top ? 1.0f : 0.0f, id = rd == top ? 1.0f : 0.0f;
        const float share = g[k] / (ia + ib + ic + id);
        d0[at + k] = a > 0.0f ? ia * share : 0.0f;
        d0[at + c + k] = bb > 0.0f ? ib * share : 0.0f;
        d1[at + k] = cc > 0.0f ? ic * share : 0.0f;
        d1[at + c + k] = dd > 0.0f ? id * share : 0.0f;
      }
    }
    if (w % 2) {
      std::fill(d0 + (w - 1) * c, d0 + w * c, 0.0f);
      std::fill(d1 + (w - 1) * c, d1 + w * c, 0.0f);
    }
  });
  if (h % 2) {
    for (int64_t b = 0; b < n; ++b) {
      float* last = dz + ((b * h + h - 1) * w) * c;
      std::fill(last, last + w * c, 0.0f);
    }
  }
}

// Runs compute, turning a C++ exception (out of memory for a patch buffer, say) into an XLA error naming the op.
template <typename F>
ffi::Error Guarded(const char* op, F compute) {
  try {
    compute();
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, std::string("lungjax ") + op + ": " + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error CheckShapes(ffi::Span<const int64_t> x, ffi::Span<const int64_t> k, ffi::Span<const int64_t> y,
                       int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  if (x.size() != 4 || k.size() != 4 || y.size() != 4) {
    return ffi::Error::InvalidArgument("blas conv: expected rank-4 NHWC input, HWIO kernel, NHWC output");
  }
  if (k[2] != x[3] || y[3] != k[3] || y[0] != x[0] || y[1] != x[1] + pad_top + pad_bottom - k[0] + 1 ||
      y[2] != x[2] + pad_left + pad_right - k[1] + 1 || y[1] <= 0 || y[2] <= 0) {
    return ffi::Error::InvalidArgument("blas conv: shapes do not match a stride-1 convolution with these pads");
  }
  if (pad_top < 0 || pad_bottom < 0 || pad_left < 0 || pad_right < 0) {
    return ffi::Error::InvalidArgument("blas conv: negative padding");
  }
  return ffi::Error::Success();
}

ffi::Error CheckMode(int64_t mode) {
  if (mode != kFloat32 && mode != kBf16Native && mode != kBf16Emulated) {
    return ffi::Error::InvalidArgument("blas conv: bf16 must be 0 (float32), 1 (bfloat16) or 2 (emulated bfloat16)");
  }
  if (mode == kBf16Native && !CpuHasBf16Dot()) {
    return ffi::Error::InvalidArgument("blas conv: bfloat16 needs a CPU with avx512_bf16 dot products");
  }
  return ffi::Error::Success();
}

Geometry MakeGeometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> k, ffi::Span<const int64_t> y,
                      int64_t pad_top, int64_t pad_left) {
  return Geometry{x[0], x[1], x[2], x[3], k[0], k[1], k[3], y[1], y[2], pad_top, pad_left};
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> kernel,
                   ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> y, int64_t pad_top, int64_t pad_bottom,
                   int64_t pad_left, int64_t pad_right, int64_t bf16) {
  if (auto e = CheckMode(bf16); e.failure()) return e;
  if (auto e = CheckShapes(x.dimensions(), kernel.dimensions(), y->dimensions(), pad_top, pad_bottom, pad_left,
                           pad_right);
      e.failure()) {
    return e;
  }
  if (bias.dimensions().size() != 1 || bias.dimensions()[0] != kernel.dimensions()[3]) {
    return ffi::Error::InvalidArgument("blas conv: bias must be a vector of the kernel's output features");
  }
  return Guarded("conv forward", [&] {
    const Geometry g = MakeGeometry(x.dimensions(), kernel.dimensions(), y->dimensions(), pad_top, pad_left);
    if (bf16 != kFloat32) {
      ConvForwardBf16(pool, g, x.typed_data(), kernel.typed_data(), bias.typed_data(), y->typed_data(), bf16);
    } else {
      ConvForward(pool, g, x.typed_data(), kernel.typed_data(), bias.typed_data(), y->typed_data());
    }
  });
}

// dx = conv(dY, kernel rotated 180 degrees with in/out swapped), padded by kernel size - 1 - pad on each side.
ffi::Error InputGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> kernel,
                     ffi::ResultBuffer<ffi::F32> dx, int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                     int64_t pad_right, int64_t bf16) {
  if (auto e = CheckMode(bf16); e.failure()) return e;
  auto k = kernel.dimensions();
  if (auto e = CheckShapes(dx->dimensions(), k, dy.dimensions(), pad_top, pad_bottom, pad_left, pad_right);
      e.failure()) {
    return e;
  }
  const int64_t kh = k[0], kw = k[1], c = k[2], o = k[3];
  if (pad_top >= kh || pad_bottom >= kh || pad_left >= kw || pad_right >= kw) {
    return ffi::Error::InvalidArgument("blas conv: input gradient needs padding smaller than the kernel");
  }
  return Guarded("conv input gradient", [&] {
    std::vector<float> flipped(kh * kw * o * c);
    const float* src = kernel.typed_data();
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j)
        for (int64_t ci = 0; ci < c; ++ci)
          for (int64_t co = 0; co < o; ++co)
            flipped[(((kh - 1 - i) * kw + (kw - 1 - j)) * o + co) * c + ci] = src[((i * kw + j) * c + ci) * o + co];
    auto d = dy.dimensions(), out = dx->dimensions();
    Geometry g{d[0], d[1], d[2], d[3], kh, kw, c, out[1], out[2], kh - 1 - pad_top, kw - 1 - pad_left};
    if (bf16 != kFloat32) {
      ConvForwardBf16(pool, g, dy.typed_data(), flipped.data(), nullptr, dx->typed_data(), bf16);
    } else {
      ConvForward(pool, g, dy.typed_data(), flipped.data(), nullptr, dx->typed_data());
    }
  });
}

ffi::Error KernelGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                      ffi::ResultBuffer<ffi::F32> dkernel, ffi::ResultBuffer<ffi::F32> dbias, int64_t pad_top,
                      int64_t pad_bottom, int64_t pad_left, int64_t pad_right, int64_t bf16) {
  if (auto e = CheckMode(bf16); e.failure()) return e;
  if (auto e = CheckShapes(x.dimensions(), dkernel->dimensions(), dy.dimensions(), pad_top, pad_bottom, pad_left,
                           pad_right);
      e.failure()) {
    return e;
  }
  if (dbias->dimensions().size() != 1 || dbias->dimensions()[0] != dkernel->dimensions()[3]) {
    return ffi::Error::InvalidArgument("blas conv: bias gradient must be a vector of the output features");
  }
  return Guarded("conv kernel gradient", [&] {
    const Geometry g = MakeGeometry(x.dimensions(), dkernel->dimensions(), dy.dimensions(), pad_top, pad_left);
    if (bf16 != kFloat32) {
      ConvKernelGradBf16(pool, g, x.typed_data(), dy.typed_data(), dkernel->typed_data(), dbias->typed_data(), bf16);
    } else {
      ConvKernelGrad(pool, g, x.typed_data(), dy.typed_data(), dkernel->typed_data(), dbias->typed_data());
    }
  });
}

ffi::Error PoolGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> z, ffi::Buffer<ffi::F32> dy,
                    ffi::ResultBuffer<ffi::F32> dz) {
  auto s = z.dimensions(), p = dy.dimensions();
  if (s.size() != 4 || p.size() != 4 || p[0] != s[0] || p[1] != s[1] / 2 || p[2] != s[2] / 2 || p[3] != s[3] ||
      p[1] == 0 || p[2] == 0) {
    return ffi::Error::InvalidArgument("relu max-pool gradient: dY must be NHWC [n, h / 2, w / 2, c] of z");
  }
  return Guarded("relu max-pool gradient", [&] {
    ReluMaxPoolGrad(pool, s[0], s[1], s[2], s[3], z.typed_data(), dy.typed_data(), dz->typed_data());
  });
}

// OpenBLAS's own threads would compete with XLA's pool: every sgemm here runs on the thread that calls it.
const bool kSingleThreadedBlas = [] {
  scipy_openblas_set_num_threads(1);
  return true;
}();

}  // namespace

#define LUNGJAX_F32 ffi::Buffer<ffi::F32>
#define LUNGJAX_PADS Attr<int64_t>("pad_top").Attr<int64_t>("pad_bottom").Attr<int64_t>("pad_left").Attr<int64_t>("pad_right").Attr<int64_t>("bf16")

// 1 where the CPU computes bfloat16 dot products natively (avx512f + avx512bf16), else 0; lungjax.cpu.kernels asks.
extern "C" int LungjaxCpuHasBf16Dot() { return CpuHasBf16Dot() ? 1 : 0; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(LungjaxBlasConvForward, Forward,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<LUNGJAX_F32>().Arg<LUNGJAX_F32>()
                                  .Arg<LUNGJAX_F32>().Ret<LUNGJAX_F32>().LUNGJAX_PADS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(LungjaxBlasConvInputGrad, InputGrad,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<LUNGJAX_F32>().Arg<LUNGJAX_F32>()
                                  .Ret<LUNGJAX_F32>().LUNGJAX_PADS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(LungjaxBlasConvKernelGrad, KernelGrad,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<LUNGJAX_F32>().Arg<LUNGJAX_F32>()
                                  .Ret<LUNGJAX_F32>().Ret<LUNGJAX_F32>().LUNGJAX_PADS);
XLA_FFI_DEFINE_HANDLER_SYMBOL(LungjaxReluMaxPoolGrad, PoolGrad,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<LUNGJAX_F32>().Arg<LUNGJAX_F32>()
                                  .Ret<LUNGJAX_F32>());
