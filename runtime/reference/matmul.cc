// matmul dispatch: picks the instruction set once (CPUID), splits the work over the thread pool,
// and holds the portable kernel instance.
#include "runtime/reference/matmul.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime/reference/thread_pool.h"

namespace kiln {

// Per-ISA instances of runtime/reference/matmul_kernel.inc (see reference_matmul_avx*.cc).
#if defined(__x86_64__)
namespace matmul_avx512 {
void matmul_block(const float* x, int64_t m, int64_t k, const void* w, int wtype, int64_t n0,
                  int64_t n1, float* y, int64_t ldy, float* panel);
}
namespace matmul_avx2 {
void matmul_block(const float* x, int64_t m, int64_t k, const void* w, int wtype, int64_t n0,
                  int64_t n1, float* y, int64_t ldy, float* panel);
}
#endif

namespace matmul_generic {
namespace {
using Vec = float;
constexpr int64_t kWidth = 1;
constexpr int kMaxRows = 4;
inline Vec vzero() { return 0.0f; }
inline Vec vload(const float* p) { return *p; }
float half_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal half: renormalize
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400) == 0);
    bits = sign | static_cast<uint32_t>(112 - e) << 23 | ((mant & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline Vec vload_bf16(const uint16_t* p) {
  const uint32_t bits = static_cast<uint32_t>(*p) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline Vec vload_f16(const uint16_t* p) { return half_to_f32(*p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return a * b + c; }
inline float vsum(Vec v) { return v; }
}  // namespace
#define KILN_MATMUL_FN matmul_block
#include "runtime/reference/matmul_kernel.inc"
#undef KILN_MATMUL_FN
}  // namespace matmul_generic

namespace {

using BlockFn = void (*)(const float*, int64_t, int64_t, const void*, int, int64_t, int64_t, float*,
                         int64_t, float*);

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

constexpr int64_t kPanelRows = 16;  // must match kPanel in matmul_kernel.inc
constexpr int64_t kSmallM = 16;     // below this, split over output columns
constexpr int64_t kMinColsPerTask = 64;
// Decode GEMVs with less weight than this run on one thread: they are L2/L3-resident (~40 GB/s
// on one core) and the hand-off to a second thread costs more than it saves on shared cores.
constexpr int64_t kMinThreadedWeightBytes = 4 << 20;

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
            MatmulIsa isa) {
  if (!matmul_isa_supported(isa)) isa = MatmulIsa::kGeneric;
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
      std::vector<float> panel(wtype != 0 && m > 8 ? kPanelRows * k : 0);
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
  // Prefill: rows are split; each thread widens every weight panel once and reuses it for its rows.
  pool->parallel_for(
      m,
      [&](int64_t b, int64_t e) {
        std::vector<float> panel(kPanelRows * k);
        fn(x + b * k, e - b, k, w.data, wtype, 0, n, y + b * n, n, panel.data());
      },
      4);
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
    default: std::memcpy(out, static_cast<const float*>(data) + offset, count * sizeof(float));
  }
}

}  // namespace kiln
