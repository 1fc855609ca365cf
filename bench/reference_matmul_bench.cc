// Google Benchmark of the reference matmul: decode GEMVs of SmolLM2-135M shapes (lm_head
// [1,576]x[49152,576], MLP [1,576]x[1536,576]) and a prefill GEMM; reports weight GB/s.
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <vector>

#include "runtime/reference/matmul.h"
#include "runtime/reference/thread_pool.h"

namespace kiln {
namespace {

ThreadPool& pool() {
  static ThreadPool p(0);
  return p;
}

void BM_Matmul(benchmark::State& state, DType dtype, int64_t m, int64_t n, int64_t k,
               bool threaded = true) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> x(m * k), wf(n * k), y(m * n);
  for (float& v : x) v = dist(rng);
  for (float& v : wf) v = dist(rng);
  std::vector<uint16_t> w16(n * k);
  for (int64_t i = 0; i < n * k; ++i) {
    uint32_t b;
    std::memcpy(&b, &wf[i], 4);
    w16[i] = static_cast<uint16_t>(b >> 16);  // bf16 by truncation; f16 bits are just as good
  }
  const WeightRef w{dtype, dtype == DType::kF32 ? static_cast<const void*>(wf.data()) : w16.data(),
                    n, k};
  const int64_t weight_bytes = n * k * (dtype == DType::kF32 ? 4 : 2);
  for (auto _ : state) {
    matmul(x.data(), m, w, y.data(), threaded ? &pool() : nullptr);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * weight_bytes);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * n * k * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(std::string(matmul_isa_name(MatmulIsa::kAuto)) +
                 " threads=" + std::to_string(threaded ? pool().num_threads() : 1));
}

BENCHMARK_CAPTURE(BM_Matmul, lm_head_bf16, DType::kBF16, 1, 49152, 576)->UseRealTime();
BENCHMARK_CAPTURE(BM_Matmul, mlp_up_bf16, DType::kBF16, 1, 1536, 576)->UseRealTime();
BENCHMARK_CAPTURE(BM_Matmul, mlp_down_bf16, DType::kBF16, 1, 576, 1536)->UseRealTime();
BENCHMARK_CAPTURE(BM_Matmul, lm_head_f16, DType::kF16, 1, 49152, 576)->UseRealTime();
BENCHMARK_CAPTURE(BM_Matmul, lm_head_f32, DType::kF32, 1, 49152, 576)->UseRealTime();
BENCHMARK_CAPTURE(BM_Matmul, lm_head_bf16_1thread, DType::kBF16, 1, 49152, 576, false)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_Matmul, mlp_up_bf16_1thread, DType::kBF16, 1, 1536, 576, false)->UseRealTime();
BENCHMARK_CAPTURE(BM_Matmul, mlp_up_bf16_m4, DType::kBF16, 4, 1536, 576)->UseRealTime();
BENCHMARK_CAPTURE(BM_Matmul, prefill_bf16_m128, DType::kBF16, 128, 1536, 576)->UseRealTime();

}  // namespace
}  // namespace kiln

BENCHMARK_MAIN();
