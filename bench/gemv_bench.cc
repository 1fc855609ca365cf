// gemv_bench: kiln's small-batch GEMV (kernels/gemv.cuh) against cuBLASLt at the decode shapes
// of the Llama-3-8B, Llama-3.2-1B and SmolLM2-135M models, batch (M) 1, 4 and 16, plus the copy
// ceiling, all in one run on one GPU. One JSON line per shape and batch:
//   {"bench": "gemv", "shape": "8b_o", "M": 1, "N": .., "K": .., "kiln_us", "cublas_us",
//    "kiln_TBps", "cublas_TBps", "kiln_pct_copy", "cublas_pct_copy", "winner", "key", ...}
// TB/s counts the weight bytes (what bounds decode), as ../shared/peers/decode_gemm_peer.py
// does. `--sweep` times only the 8B and 1B shapes (the 85%-of-copy target), each with neighbouring block
// shapes too (row tiles 1/2 x unroll 2/4/8 with 8 warps; 4 warps at row tiles 1/2; the
// software-pipelined variant at 8 and 4 warps), and the 1B shapes likewise, so gemv_spec_for's
// choice can be checked; `--quick` times only M = 1 and 16.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "codegen/families/gemv.h"
#include "codegen/kernel_source.h"
#include "codegen/nvrtc_compiler.h"
#include "runtime/cuda/gemm_timing.h"

namespace kiln {
namespace {

struct BenchShape {
  const char* name;
  int64_t n, k;
};

// Shapes from models/*.config.json: qkv = (heads + 2·kv_heads)·head_dim, gate/up merged.
constexpr BenchShape kShapes[] = {
    {"8b_qkv", 6144, 4096},      {"8b_o", 4096, 4096},        {"8b_gate_up", 28672, 4096},
    {"8b_up", 14336, 4096},      {"8b_down", 4096, 14336},    {"8b_head", 128256, 4096},
    {"1b_qkv", 3072, 2048},      {"1b_o", 2048, 2048},        {"1b_gate_up", 16384, 2048},
    {"1b_down", 2048, 8192},     {"1b_head", 128256, 2048},   {"smol_qkv", 960, 576},
    {"smol_o", 576, 576},        {"smol_gate_up", 3072, 576}, {"smol_down", 576, 1536},
    {"smol_head", 49152, 576},
};

int run(bool sweep, bool quick) {
  absl::StatusOr<GpuDevice> dev = open_gpu();
  if (!dev.ok()) {
    std::fprintf(stderr, "gemv_bench: no GPU: %s\n", std::string(dev.status().message()).c_str());
    return 77;
  }
  absl::StatusOr<std::unique_ptr<GemmRunner>> gemm = GemmRunner::create(*dev);
  if (!gemm.ok()) {
    std::fprintf(stderr, "gemv_bench: %s\n", std::string(gemm.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<double> copy = copy_bandwidth_tbps(*dev);
  if (!copy.ok()) {
    std::fprintf(stderr, "gemv_bench: copy: %s\n", std::string(copy.status().message()).c_str());
    return 1;
  }
  std::printf("{\"bench\": \"copy\", \"TBps\": %.3f, \"device\": \"%s\"}\n", *copy,
              dev->name().c_str());
  std::fflush(stdout);
  int failures = 0;
  for (const BenchShape& bs : kShapes) {
    std::vector<GemvSpec> specs = {gemv_spec_for(bs.n, bs.k)};
    if (sweep) {
      if (std::strncmp(bs.name, "8b_", 3) != 0 && std::strncmp(bs.name, "1b_", 3) != 0) continue;
      for (int64_t rt : {1, 2}) {
        for (int64_t u : {2, 4, 8}) {
          GemvSpec s = specs[0];
          s.row_tiles = rt;
          s.unroll = u;
          if (s.key() != specs[0].key()) specs.push_back(s);
        }
      }
      for (int64_t rt : {1, 2}) {  // 128-thread blocks: finer wave quantization
        GemvSpec four = specs[0];
        four.warps = 4;
        four.row_tiles = rt;
        four.unroll = rt == 1 ? 4 : 2;
        specs.push_back(four);
      }
      // Software pipelining (GemvSpec::prefetch): two register sets, 8 and 4 warps.
      for (int64_t w : {8, 4}) {
        for (int64_t rt : {1, 2}) {
          for (int64_t u : {1, 2, 4}) {
            if (rt * u > 4) continue;  // registers: 2 sets x u x rt x 2 rows x 4 words
            GemvSpec p = specs[0];
            p.prefetch = true;
            p.warps = w;
            p.row_tiles = rt;
            p.unroll = u;
            specs.push_back(p);
          }
        }
      }
    }
    std::vector<GemvLaunch> launches;
    for (GemvSpec& s : specs) {
      absl::StatusOr<std::string> src = emit_kernel_source(s);
      absl::StatusOr<CompiledKernel> ck =
          src.ok() ? nvrtc_compile(s.key(), *src, dev->arch()) : src.status();
      absl::StatusOr<GpuKernel> k = ck.ok() ? dev->load_kernel(ck->cubin, s.key()) : ck.status();
      if (!k.ok()) {
        std::fprintf(stderr, "gemv_bench: %s: %s\n", s.key().c_str(),
                     std::string(k.status().message()).c_str());
        return 1;
      }
      GemvLaunch l;
      l.kernel = *k;
      l.dims.grid[0] = static_cast<unsigned>((s.n + 16 * s.row_tiles - 1) / (16 * s.row_tiles));
      l.dims.block[0] = static_cast<unsigned>(s.threads());
      launches.push_back(l);
    }
    for (int64_t m : {1, 4, 16}) {
      if (quick && m == 4) continue;
      GemmShape shape{m, bs.n, bs.k};
      for (size_t i = 0; i < specs.size(); ++i) {
        absl::StatusOr<GemmTiming> t = time_gemm_both_ways(*dev, **gemm, shape, &launches[i]);
        if (!t.ok()) {
          std::fprintf(stderr, "gemv_bench: %s\n", std::string(t.status().message()).c_str());
          ++failures;
          continue;
        }
        const double kt = *t->kiln_weight_tbps(), ct = t->cublas_weight_tbps();
        std::printf(
            "{\"bench\": \"gemv\", \"shape\": \"%s\", \"M\": %lld, \"N\": %lld, \"K\": %lld, "
            "\"kiln_us\": %.2f, \"cublas_us\": %.2f, \"kiln_TBps\": %.3f, \"cublas_TBps\": %.3f, "
            "\"copy_TBps\": %.3f, \"kiln_pct_copy\": %.1f, \"cublas_pct_copy\": %.1f, "
            "\"winner\": \"%s\", \"default_spec\": %s, \"key\": \"%s\", \"registers\": %d, "
            "\"copies\": %d, \"device\": \"%s\"}\n",
            bs.name, static_cast<long long>(m), static_cast<long long>(bs.n),
            static_cast<long long>(bs.k), *t->kiln_us, t->cublas_us, kt, ct, *copy,
            100 * kt / *copy, 100 * ct / *copy, kt > ct ? "kiln" : "cublas",
            i == 0 ? "true" : "false", specs[i].key().c_str(), launches[i].kernel.registers,
            t->copies, dev->name().c_str());
        std::fflush(stdout);
      }
    }
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace kiln

int main(int argc, char** argv) {
  bool sweep = false, quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--sweep") == 0) {
      sweep = true;
    } else if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: gemv_bench [--sweep] [--quick]\n");
      return 2;
    }
  }
  return kiln::run(sweep, quick);
}
