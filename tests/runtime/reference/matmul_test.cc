// matmul fast paths (every ISA this CPU supports, threaded and not) against a naive double-
// precision product, for decode and prefill row counts, odd sizes and f32/bf16/f16 weights.
#include "runtime/reference/matmul.h"

#include <cmath>
#include <cstring>
#include <random>

#include "gtest/gtest.h"
#include "models/dequantize.h"
#include "runtime/reference/thread_pool.h"
#include "tests/runtime/reference/test_util.h"

namespace kiln {
namespace {

using testing::from_bf16;
using testing::from_f16;
using testing::random_floats;

struct Case {
  DType dtype;
  int64_t m, n, k;
};

TEST(ReferenceMatmulTest, MatchesNaiveOnAllPaths) {
  ThreadPool pool(3);
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int64_t m : {1, 3, 17, 64}) {
      for (auto [n, k] : {std::pair<int64_t, int64_t>{37, 53}, {64, 576}, {5, 7}, {129, 33}}) {
        std::vector<float> x = random_floats(m * k, 11 + m);
        std::vector<float> wf = random_floats(n * k, 23 + n, -2, 2);
        std::vector<uint16_t> w16(n * k);
        for (int64_t i = 0; i < n * k; ++i) {
          if (dtype == DType::kBF16) {
            w16[i] = testing::to_bf16(wf[i]);
            wf[i] = from_bf16(w16[i]);
          } else if (dtype == DType::kF16) {
            w16[i] = testing::to_f16(wf[i]);
            wf[i] = from_f16(w16[i]);
          }
        }
        std::vector<double> ref(m * n);
        double scale = 0;
        for (int64_t r = 0; r < m; ++r) {
          for (int64_t c = 0; c < n; ++c) {
            double s = 0, a = 0;
            for (int64_t t = 0; t < k; ++t) {
              s += static_cast<double>(x[r * k + t]) * wf[c * k + t];
              a += std::fabs(static_cast<double>(x[r * k + t]) * wf[c * k + t]);
            }
            ref[r * n + c] = s;
            scale = std::max(scale, a);
          }
        }
        WeightRef w{dtype, dtype == DType::kF32 ? static_cast<const void*>(wf.data()) : w16.data(),
                    n, k};
        for (MatmulIsa isa : {MatmulIsa::kGeneric, MatmulIsa::kAvx2, MatmulIsa::kAvx512}) {
          if (!matmul_isa_supported(isa)) continue;
          for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
            std::vector<float> y(m * n, NAN);
            matmul(x.data(), m, w, y.data(), p, isa);
            double worst = 0;
            for (int64_t i = 0; i < m * n; ++i) {
              // Error relative to Σ|x·w| (the fp32 accumulation bound), so near-cancelling sums
              // do not inflate it.
              worst = std::max(worst, std::fabs(y[i] - ref[i]) / scale);
            }
            EXPECT_LE(worst, 1e-5) << dtype_name(dtype) << " m=" << m << " n=" << n << " k=" << k
                                   << " isa=" << matmul_isa_name(isa) << " threads=" << (p ? 3 : 1);
          }
        }
      }
    }
  }
}

// Random GGUF blocks of `dtype` for an [n, k] weight: random quant bytes, with every f16 scale and
// min field overwritten by a finite value (random bytes there could be NaN or huge).
std::vector<uint8_t> random_blocks(DType dtype, int64_t n, int64_t k, uint32_t seed) {
  const int64_t blocks = n * k / block_elements(dtype), bytes = block_bytes(dtype);
  std::vector<uint8_t> out(blocks * bytes);
  std::mt19937 rng(seed);
  for (uint8_t& b : out) b = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> scale(0.01f, 0.2f), min(-0.5f, 0.5f);
  auto put = [&](uint8_t* p, float v) {
    const uint16_t h = testing::to_f16(v);
    std::memcpy(p, &h, 2);
  };
  for (int64_t i = 0; i < blocks; ++i) {
    uint8_t* b = out.data() + i * bytes;
    switch (dtype) {
      case DType::kQ8_0:
      case DType::kQ4_0: put(b, scale(rng)); break;
      case DType::kQ4_1: put(b, scale(rng)), put(b + 2, min(rng)); break;
      case DType::kQ4_K: put(b, scale(rng) / 8), put(b + 2, scale(rng) / 8); break;
      case DType::kQ6_K: put(b + 208, scale(rng) / 8); break;
      default: break;
    }
  }
  return out;
}

// Block-quantized weights on every path (in-place blocks for decode row counts, dequantized panels
// for prefill and the K-quants, one and three threads, every ISA) against models/dequantize.h's
// f32 values times x in double precision.
TEST(ReferenceMatmulTest, QuantizedMatchesDequantized) {
  ThreadPool pool(3);
  for (DType dtype : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1, DType::kQ4_K, DType::kQ6_K}) {
    const int64_t be = block_elements(dtype);
    for (int64_t m : {1, 2, 5, 17, 40}) {
      // The last shape has 160+ KB of weight: the threaded decode split.
      for (auto [n, k] : {std::pair<int64_t, int64_t>{37, be}, {64, 3 * be}, {9, 18 * be},
                          {1100, 256}}) {
        if (k % be != 0) continue;
        std::vector<float> x = random_floats(m * k, 5 + m);
        std::vector<uint8_t> blocks = random_blocks(dtype, n, k, 7 + n);
        std::vector<float> wf(n * k);
        ASSERT_TRUE(dequantize_row(dtype, blocks.data(), n * k, wf.data()).ok());
        std::vector<double> ref(m * n);
        double scale = 0;
        for (int64_t r = 0; r < m; ++r) {
          for (int64_t c = 0; c < n; ++c) {
            double s = 0, a = 0;
            for (int64_t t = 0; t < k; ++t) {
              s += static_cast<double>(x[r * k + t]) * wf[c * k + t];
              a += std::fabs(static_cast<double>(x[r * k + t]) * wf[c * k + t]);
            }
            ref[r * n + c] = s;
            scale = std::max(scale, a);
          }
        }
        const WeightRef w{dtype, blocks.data(), n, k};
        for (MatmulIsa isa : {MatmulIsa::kGeneric, MatmulIsa::kAvx2, MatmulIsa::kAvx512}) {
          if (!matmul_isa_supported(isa)) continue;
          for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
            std::vector<float> y(m * n, NAN);
            matmul(x.data(), m, w, y.data(), p, isa);
            double worst = 0;
            for (int64_t i = 0; i < m * n; ++i) {
              worst = std::max(worst, std::fabs(y[i] - ref[i]) / scale);
            }
            EXPECT_LE(worst, 1e-5) << dtype_name(dtype) << " m=" << m << " n=" << n << " k=" << k
                                   << " isa=" << matmul_isa_name(isa) << " threads=" << (p ? 3 : 1);
          }
        }
      }
    }
  }
}

// quantize_activations: x rounded to 8-bit codes per 32 values (scale amax / 127), then the same
// product: exact up to f32 accumulation against the rounded x in double precision.
TEST(ReferenceMatmulTest, QuantizedActivationsMatchRoundedX) {
  ThreadPool pool(3);
  for (DType dtype : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_1}) {
    for (int64_t m : {1, 3, 6}) {
      for (auto [n, k] : {std::pair<int64_t, int64_t>{37, 32}, {64, 576}, {1100, 256}}) {
        std::vector<float> x = random_floats(m * k, 3 + m, -3, 3);
        std::vector<uint8_t> blocks = random_blocks(dtype, n, k, 17 + n);
        std::vector<float> wf(n * k);
        ASSERT_TRUE(dequantize_row(dtype, blocks.data(), n * k, wf.data()).ok());
        std::vector<double> xr(m * k);
        for (int64_t b = 0; b < m * k / 32; ++b) {
          float amax = 0;
          for (int t = 0; t < 32; ++t) amax = std::max(amax, std::fabs(x[b * 32 + t]));
          const float d = amax / 127.0f;
          for (int t = 0; t < 32; ++t) {
            xr[b * 32 + t] = d * std::nearbyint(x[b * 32 + t] / d);
          }
        }
        const WeightRef w{dtype, blocks.data(), n, k};
        for (MatmulIsa isa : {MatmulIsa::kGeneric, MatmulIsa::kAvx2, MatmulIsa::kAvx512}) {
          if (!matmul_isa_supported(isa)) continue;
          for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
            std::vector<float> y(m * n, NAN);
            matmul(x.data(), m, w, y.data(), p, isa, /*quantize_activations=*/true);
            double worst = 0, drift = 0;
            for (int64_t r = 0; r < m; ++r) {
              for (int64_t c = 0; c < n; ++c) {
                double s = 0, a = 0, exact = 0;
                for (int64_t t = 0; t < k; ++t) {
                  s += xr[r * k + t] * wf[c * k + t];
                  exact += static_cast<double>(x[r * k + t]) * wf[c * k + t];
                  a += std::fabs(xr[r * k + t] * wf[c * k + t]);
                }
                worst = std::max(worst, std::fabs(y[r * n + c] - s) / a);
                drift = std::max(drift, std::fabs(s - exact) / a);
              }
            }
            EXPECT_LE(worst, 1e-5) << dtype_name(dtype) << " m=" << m << " n=" << n
                                   << " isa=" << matmul_isa_name(isa);
            EXPECT_GT(drift, 0) << "the rounding of x must show: the option did not quantize";
          }
        }
      }
    }
  }
}

// widen_to_f32 on block types (gather's embedding rows): whole rows equal dequantize_row's.
TEST(ReferenceMatmulTest, WidenBlocksIsDequantize) {
  for (DType dtype : {DType::kQ8_0, DType::kQ4_1, DType::kQ6_K}) {
    const int64_t k = 2 * 256;
    std::vector<uint8_t> blocks = random_blocks(dtype, 3, k, 99);
    std::vector<float> all(3 * k), row(k);
    ASSERT_TRUE(dequantize_row(dtype, blocks.data(), 3 * k, all.data()).ok());
    widen_to_f32(dtype, blocks.data(), 2 * k, k, row.data());
    for (int64_t t = 0; t < k; ++t) ASSERT_EQ(row[t], all[2 * k + t]) << dtype_name(dtype) << t;
  }
}

TEST(ThreadPoolTest, CoversRangeOnce) {
  ThreadPool pool(4);
  for (int64_t n : {1, 3, 4, 1000}) {
    std::vector<int> hits(n, 0);
    for (int rep = 0; rep < 50; ++rep) {
      pool.parallel_for(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) ++hits[i];
      });
    }
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 50);
  }
}

}  // namespace
}  // namespace kiln
