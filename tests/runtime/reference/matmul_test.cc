// matmul fast paths (every ISA this CPU supports, threaded and not) against a naive double-
// precision product, for decode and prefill row counts, odd sizes and f32/bf16/f16 weights.
#include "runtime/reference/matmul.h"

#include <cmath>

#include "gtest/gtest.h"
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
