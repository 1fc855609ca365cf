// matmul dispatch: picks the instruction set once (CPUID), splits the work over the thread pool,
// and holds the portable kernel instance.
#include "runtime/reference/matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "models/dequantize.h"
#include "runtime/reference/thread_pool.h"

namespace kiln {

// Per-ISA instances of runtime/reference/matmul_kernel.inc (see reference_matmul_avx*.cc).
// Per-ISA instances of runtime/reference/matmul_quant_kernel.inc likewise.
#define KILN_DECLARE_MATMUL_KERNELS                                                              \
  void matmul_block(const float* x, int64_t m, int64_t k, const void* w, int wtype, int64_t n0, \
                    int64_t n1, float* y, int64_t ldy, float* panel);                           \
  void qmatmul_block(const float* x, int64_t m, int64_t k, const void* w, int qtype, int64_t n0, \
                     int64_t n1, float* y, int64_t ldy, const float* xsum);                     \
  void qdequant_rows(const void* w, int qtype, int64_t k, int64_t r0, int64_t r1, float* out); \
  void q8matmul_block(const int8_t* xq, int64_t m, int64_t k, const void* w, int qtype,        \
                      int64_t n0, int64_t n1, float* y, int64_t ldy, const float* xd,          \
                      const float* xs);
#if defined(__x86_64__)
namespace matmul_avx512 {
KILN_DECLARE_MATMUL_KERNELS
}
namespace matmul_avx2 {
KILN_DECLARE_MATMUL_KERNELS
}
#endif
#undef KILN_DECLARE_MATMUL_KERNELS

namespace matmul_generic {
namespace {
using Vec = float;
constexpr int64_t kWidth = 1;
constexpr int kMaxRows = 4;
inline Vec vzero() { return 0.0f; }
inline Vec vload(const float* p) { return *p; }
// The one f16 -> f32 conversion of the tree (models/dequantize.h).
inline float half_to_f32(uint16_t h) { return f16_to_f32(h); }
inline Vec vload_bf16(const uint16_t* p) {
  const uint32_t bits = static_cast<uint32_t>(*p) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline Vec vload_f16(const uint16_t* p) { return half_to_f32(*p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return a * b + c; }
inline float vsum(Vec v) { return v; }
inline Vec vset1(float f) { return f; }
inline Vec vmul(Vec a, Vec b) { return a * b; }
inline Vec vadd(Vec a, Vec b) { return a + b; }
inline void vstore(float* p, Vec v) { *p = v; }
inline void q4_unpack(const uint8_t* qs, Vec* v) {
  for (int j = 0; j < 16; ++j) {
    v[j] = static_cast<float>(qs[j] & 0x0F);
    v[j + 16] = static_cast<float>(qs[j] >> 4);
  }
}
inline void q8_unpack(const int8_t* qs, Vec* v) {
  for (int j = 0; j < 32; ++j) v[j] = static_cast<float>(qs[j]);
}
using QVec = float;
inline QVec qv_zero() { return 0.0f; }
inline QVec qv_set1(float f) { return f; }
inline QVec qv_fma(QVec a, QVec b, QVec c) { return a * b + c; }
inline QVec qv_add(QVec a, QVec b) { return a + b; }
inline float qv_sum(QVec v) { return v; }
inline QVec q4q8_dot(const uint8_t* qs, const int8_t* xq) {
  int32_t s = 0;
  for (int j = 0; j < 16; ++j) s += (qs[j] & 0x0F) * xq[j] + (qs[j] >> 4) * xq[j + 16];
  return static_cast<float>(s);
}
inline QVec q8q8_dot(const int8_t* w, const int8_t* xq) {
  int32_t s = 0;
  for (int j = 0; j < 32; ++j) s += w[j] * xq[j];
  return static_cast<float>(s);
}
}  // namespace
#define KILN_MATMUL_FN matmul_block
#include "runtime/reference/matmul_kernel.inc"
#undef KILN_MATMUL_FN
#define KILN_QMATMUL_FN qmatmul_block
#define KILN_QDEQUANT_FN qdequant_rows
#define KILN_Q8MATMUL_FN q8matmul_block
#include "runtime/reference/matmul_quant_kernel.inc"
#undef KILN_QMATMUL_FN
#undef KILN_QDEQUANT_FN
#undef KILN_Q8MATMUL_FN
}  // namespace matmul_generic

namespace {

using BlockFn = void (*)(const float*, int64_t, int64_t, const void*, int, int64_t, int64_t, float*,
                         int64_t, float*);
using QBlockFn = void (*)(const float*, int64_t, int64_t, const void*, int, int64_t, int64_t,
                          float*, int64_t, const float*);
using QDequantFn = void (*)(const void*, int, int64_t, int64_t, int64_t, float*);
using Q8BlockFn = void (*)(const int8_t*, int64_t, int64_t, const void*, int, int64_t, int64_t,
                           float*, int64_t, const float*, const float*);

MatmulIsa best_isa() {
  static const MatmulIsa best = [] {
    if (matmul_isa_supported(MatmulIsa::kAvx512)) return MatmulIsa::kAvx512;
    if (matmul_isa_supported(MatmulIsa::kAvx2)) return MatmulIsa::kAvx2;
    return MatmulIsa::kGeneric;
  }();
  return best;
}

BlockFn block_fn(MatmulIsa isa) {
  switch (isa) {
#if defined(__x86_64__)
    case MatmulIsa::kAvx512: return matmul_avx512::matmul_block;
    case MatmulIsa::kAvx2: return matmul_avx2::matmul_block;
#else
    case MatmulIsa::kAvx512:
    case MatmulIsa::kAvx2:
#endif
    case MatmulIsa::kGeneric: return matmul_generic::matmul_block;
    case MatmulIsa::kAuto: return block_fn(best_isa());
  }
  return matmul_generic::matmul_block;
}

QBlockFn qblock_fn(MatmulIsa isa) {
  switch (isa) {
#if defined(__x86_64__)
    case MatmulIsa::kAvx512: return matmul_avx512::qmatmul_block;
    case MatmulIsa::kAvx2: return matmul_avx2::qmatmul_block;
#else
    case MatmulIsa::kAvx512:
    case MatmulIsa::kAvx2:
#endif
    case MatmulIsa::kGeneric: return matmul_generic::qmatmul_block;
    case MatmulIsa::kAuto: return qblock_fn(best_isa());
  }
  return matmul_generic::qmatmul_block;
}

QDequantFn qdequant_fn(MatmulIsa isa) {
  switch (isa) {
#if defined(__x86_64__)
    case MatmulIsa::kAvx512: return matmul_avx512::qdequant_rows;
    case MatmulIsa::kAvx2: return matmul_avx2::qdequant_rows;
#else
    case MatmulIsa::kAvx512:
    case MatmulIsa::kAvx2:
#endif
    case MatmulIsa::kGeneric: return matmul_generic::qdequant_rows;
    case MatmulIsa::kAuto: return qdequant_fn(best_isa());
  }
  return matmul_generic::qdequant_rows;
}

Q8BlockFn q8block_fn(MatmulIsa isa) {
  switch (isa) {
#if defined(__x86_64__)
    case MatmulIsa::kAvx512: return matmul_avx512::q8matmul_block;
    case MatmulIsa::kAvx2: return matmul_avx2::q8matmul_block;
#else
    case MatmulIsa::kAvx512:
    case MatmulIsa::kAvx2:
#endif
    case MatmulIsa::kGeneric: return matmul_generic::q8matmul_block;
    case MatmulIsa::kAuto: return q8block_fn(best_isa());
  }
  return matmul_generic::q8matmul_block;
}

// The kernels' qtype for the block types they read directly; -1 for the K-quants (dequantized
// through models/dequantize.h a panel at a time).
int direct_qtype(DType dtype) {
  switch (dtype) {
    case DType::kQ8_0: return 0;
    case DType::kQ4_0: return 1;
    case DType::kQ4_1: return 2;
    default: return -1;
  }
}

constexpr int64_t kPanelRows = 16;  // must match kPanel in matmul_kernel.inc
constexpr int64_t kSmallM = 16;     // below this, split over output columns
constexpr int64_t kMinColsPerTask = 64;
// Decode GEMVs with less weight than this run on one thread. A decode step streams every weight
// from DRAM (the model is far larger than the caches), so even SmolLM2's 0.2-1.8 MB projections
// gain from a second thread; the workers spin between the step's back-to-back calls, so a
// hand-off costs ~1 µs. (This was 4 MB, which left every projection of a small model on one
// thread: --threads 2 changed nothing but the LM head.)
constexpr int64_t kMinThreadedWeightBytes = 48 << 10;
constexpr int64_t kMinRowsPerTask = 32;  // quantized decode: weight rows per task

// y = x · wᵀ for block-quantized w. Small m reads the blocks in place (Q8_0/Q4_0/Q4_1); large m,
// and the K-quants at any m, widen a panel of kPanelRows weight rows to f32 once per task and
// reuse it for all m rows through the f32 kernel.
void quantized_matmul(const float* x, int64_t m, const WeightRef& w, float* y, ThreadPool* pool,
                      MatmulIsa isa, bool quantize_activations) {
  const int64_t n = w.n, k = w.k;
  const int qtype = direct_qtype(w.dtype);
  const int64_t row_bytes = k / block_elements(w.dtype) * block_bytes(w.dtype);
  const bool threaded = pool != nullptr && pool->num_threads() > 1 &&
                        (m >= kSmallM || n * row_bytes >= kMinThreadedWeightBytes);
  auto run = [&](int64_t tasks, const std::function<void(int64_t, int64_t)>& fn, int64_t min) {
    if (threaded) {
      pool->parallel_for(tasks, fn, min);
    } else {
      fn(0, tasks);
    }
  };
  if (qtype >= 0 && m < kSmallM && quantize_activations) {
    // ggml's quantize_row_q8_0 / q8_1: per 32 values, scale amax / 127, codes round(x / scale),
    // and (for the Q4 offsets) scale times the codes' sum.
    const int64_t nb = k / 32;
    std::vector<int8_t> xq(m * k);
    std::vector<float> xd(m * nb), xs(m * nb);
    for (int64_t b = 0; b < m * nb; ++b) {
      const float* xb = x + b * 32;
      float amax = 0;
      for (int t = 0; t < 32; ++t) amax = std::max(amax, std::fabs(xb[t]));
      const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
      int32_t sum = 0;
      for (int t = 0; t < 32; ++t) {
        const int8_t q = static_cast<int8_t>(std::nearbyint(xb[t] * id));
        xq[b * 32 + t] = q;
        sum += q;
      }
      xd[b] = d;
      xs[b] = d * static_cast<float>(sum);
    }
    const Q8BlockFn fn = q8block_fn(isa);
    run(
        n,
        [&](int64_t b, int64_t e) {
          fn(xq.data(), m, k, w.data, qtype, b, e, y, n, xd.data(), xs.data());
        },
        kMinRowsPerTask);
    return;
  }
  if (qtype >= 0 && m < kSmallM) {
    const int64_t nb = k / 32;
    std::vector<float> xsum(m * nb);
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t b = 0; b < nb; ++b) {
        float s = 0;
        for (int t = 0; t < 32; ++t) s += x[r * k + b * 32 + t];
        xsum[r * nb + b] = s;
      }
    }
    const QBlockFn fn = qblock_fn(isa);
    run(
        n, [&](int64_t b, int64_t e) { fn(x, m, k, w.data, qtype, b, e, y, n, xsum.data()); },
        kMinRowsPerTask);
    return;
  }
  const BlockFn f32_fn = block_fn(isa);
  const QDequantFn dequant = qdequant_fn(isa);
  const int64_t panels = (n + kPanelRows - 1) / kPanelRows;
  run(
      panels,
      [&](int64_t b, int64_t e) {
        std::vector<float> panel(kPanelRows * k), packed(kPanelRows * k);
        for (int64_t p = b; p < e; ++p) {
          const int64_t r0 = p * kPanelRows, r1 = std::min(n, r0 + kPanelRows);
          if (qtype >= 0) {
            dequant(w.data, qtype, k, r0, r1, panel.data());
          } else {
            // K-quant rows hold whole 256-value super-blocks (the executor checks k).
            (void)dequantize_row(w.dtype, static_cast<const uint8_t*>(w.data) + r0 * row_bytes,
                                 (r1 - r0) * k, panel.data());
          }
          f32_fn(x, m, k, panel.data(), 0, 0, r1 - r0, y + r0, n, packed.data());
        }
      },
      1);
}

}  // namespace

bool matmul_isa_supported(MatmulIsa isa) {
  switch (isa) {
    case MatmulIsa::kAuto:
    case MatmulIsa::kGeneric: return true;
#if defined(__x86_64__)
    case MatmulIsa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case MatmulIsa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
#else
    case MatmulIsa::kAvx2:
    case MatmulIsa::kAvx512: return false;
#endif
  }
  return false;
}

const char* matmul_isa_name(MatmulIsa isa) {
  switch (isa) {
    case MatmulIsa::kAuto: return matmul_isa_name(best_isa());
    case MatmulIsa::kGeneric: return "generic";
    case MatmulIsa::kAvx2: return "avx2";
    case MatmulIsa::kAvx512: return "avx512";
  }
  return "?";
}

void matmul(const float* x, int64_t m, const WeightRef& w, float* y, ThreadPool* pool,
            MatmulIsa isa, bool quantize_activations) {
  if (!matmul_isa_supported(isa)) isa = MatmulIsa::kGeneric;
  if (is_quantized(w.dtype)) {
    if (m <= 0 || w.n <= 0) return;
    quantized_matmul(x, m, w, y, pool, isa, quantize_activations);
    return;
  }
  const BlockFn fn = block_fn(isa);
  const int wtype = w.dtype == DType::kF32 ? 0 : w.dtype == DType::kBF16 ? 1 : 2;
  const int64_t n = w.n, k = w.k;
  if (m <= 0 || n <= 0) return;
  if (k == 0) {
    std::fill(y, y + m * n, 0.0f);
    return;
  }
  const int64_t weight_bytes = n * k * (wtype == 0 ? 4 : 2);
  const bool threaded = pool != nullptr && pool->num_threads() > 1 &&
                        (m >= kSmallM || weight_bytes >= kMinThreadedWeightBytes);
  if (m < kSmallM || !threaded) {
    // Decode: every thread streams a disjoint slice of the weight rows once.
    auto cols = [&](int64_t b, int64_t e) {
      std::vector<float> panel(m > 8 ? kPanelRows * k : 0);
      fn(x, m, k, w.data, wtype, b * 4, std::min(n, e * 4), y, n,
         panel.empty() ? nullptr : panel.data());
    };
    const int64_t groups = (n + 3) / 4;  // whole microkernel column groups per task
    if (threaded) {
      pool->parallel_for(groups, cols, kMinColsPerTask / 4);
    } else {
      cols(0, groups);
    }
    return;
  }
  // Prefill: the weight's rows are split in panels, and each thread widens its panels once and
  // runs every activation row against them. (Splitting the activation rows instead made every
  // thread widen the whole weight: 2 threads did 8x the widening of 1 and prefill did not scale.)
  const int64_t panels = (n + kPanelRows - 1) / kPanelRows;
  pool->parallel_for(
      panels,
      [&](int64_t b, int64_t e) {
        std::vector<float> panel(kPanelRows * k);
        fn(x, m, k, w.data, wtype, b * kPanelRows, std::min(n, e * kPanelRows), y, n,
           panel.data());
      },
      1);
}

void widen_to_f32(DType dtype, const void* data, int64_t offset, int64_t count, float* out) {
  switch (dtype) {
    case DType::kBF16: {
      const uint16_t* p = static_cast<const uint16_t*>(data) + offset;
      for (int64_t i = 0; i < count; ++i) {
        const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
        std::memcpy(out + i, &bits, 4);
      }
      return;
    }
    case DType::kF16: {
      const uint16_t* p = static_cast<const uint16_t*>(data) + offset;
      for (int64_t i = 0; i < count; ++i) out[i] = matmul_generic::half_to_f32(p[i]);
      return;
    }
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ4_K:
    case DType::kQ6_K: {
      // Callers pass whole blocks (rows of a weight whose row length is a block multiple).
      const int64_t be = block_elements(dtype);
      (void)dequantize_row(dtype, static_cast<const uint8_t*>(data) + offset / be * block_bytes(dtype),
                           count, out);
      return;
    }
    default: std::memcpy(out, static_cast<const float*>(data) + offset, count * sizeof(float));
  }
}

}  // namespace kiln
