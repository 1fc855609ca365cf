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

// A decode step streams every weight from DRAM (SmolLM2's 270 MB of bf16 is far larger than any
// cache): the same GEMV over `copies` distinct weights in turn, so none is cache-hot.
void BM_MatmulFromDram(benchmark::State& state, int64_t n, int64_t k, int copies, bool threaded) {
  std::mt19937 rng(1);
  std::vector<float> x(k), y(n);
  for (float& v : x) v = std::uniform_real_distribution<float>(-1, 1)(rng);
  std::vector<std::vector<uint16_t>> ws(copies, std::vector<uint16_t>(n * k));
  for (auto& w : ws) {
    // bf16 values in [0.0078, 0.0156): any finite weights do, the bytes are what is measured.
    for (uint16_t& v : w) v = static_cast<uint16_t>(0x3c00 + (rng() & 0x3ff));
  }
  int i = 0;
  for (auto _ : state) {
    const WeightRef w{DType::kBF16, ws[i].data(), n, k};
    matmul(x.data(), 1, w, y.data(), threaded ? &pool() : nullptr);
    benchmark::DoNotOptimize(y.data());
    i = (i + 1) % copies;
  }
  state.SetBytesProcessed(state.iterations() * n * k * 2);
  state.SetLabel(std::string(matmul_isa_name(MatmulIsa::kAuto)) +
                 " threads=" + std::to_string(threaded ? pool().num_threads() : 1));
}

BENCHMARK_CAPTURE(BM_MatmulFromDram, mlp_up_bf16_dram, 1536, 576, 64, true)->UseRealTime();
BENCHMARK_CAPTURE(BM_MatmulFromDram, mlp_up_bf16_dram_1thread, 1536, 576, 64, false)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_MatmulFromDram, attn_o_bf16_dram, 576, 576, 128, true)->UseRealTime();
BENCHMARK_CAPTURE(BM_MatmulFromDram, attn_o_bf16_dram_1thread, 576, 576, 128, false)
    ->UseRealTime();
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
