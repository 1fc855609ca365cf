// NVRTC compiles the GEMV specs of the Llama-3-8B decode shapes (and the epilogue / output
// variants) without register spills and within the register budget that keeps two 256-thread
// blocks per SM (the weight loads in flight per SM are what the kernel's speed rests on); the
// PTX uses the tensor-core mma and the no-L1-allocate streaming loads. No GPU is needed.
#include <gtest/gtest.h>

#include <cstdio>

#include "codegen/families/gemv.h"
#include "codegen/kernel_cache.h"
#include "codegen/kernel_source.h"
#include "codegen/nvrtc_compiler.h"
#include "tests/codegen/codegen_test_util.h"

namespace kiln {
namespace {

TEST(GemvNvrtc, LlamaShapesCompileWithoutSpills) {
  if (!nvrtc_available()) GTEST_SKIP() << "built without NVRTC";
  std::vector<KernelJob> jobs;
  std::vector<GemvSpec> specs;
  for (auto [n, k] : {std::pair<int64_t, int64_t>{6144, 4096}, {4096, 4096}, {28672, 4096},
                      {4096, 14336}, {128256, 4096}}) {
    specs.push_back(gemv_spec_for(n, k));
  }
  GemvSpec variant = gemv_spec_for(4096, 4096);
  variant.bias = variant.residual = true;
  specs.push_back(variant);
  GemvSpec logits = gemv_spec_for(128256, 4096);
  logits.out_dtype = DType::kF32;
  logits.dtype = DType::kF16;
  specs.push_back(logits);
  for (const GemvSpec& s : specs) {
    absl::StatusOr<std::string> src = emit_kernel_source(s);
    ASSERT_TRUE(src.ok()) << src.status();
    jobs.push_back({s.key(), *src});
  }
  KernelCache cache(testing::fixture_kernel_cache());
  absl::StatusOr<std::vector<CompiledKernel>> built = build_kernels(jobs, "sm_90a", &cache, 0);
  ASSERT_TRUE(built.ok()) << built.status();
  for (const CompiledKernel& k : *built) {
    std::printf("[ gemv ] %-48s %3d registers, %5d B smem, %d B spills\n", k.name.c_str(),
                k.registers, k.shared_bytes, k.spill_bytes);
    EXPECT_EQ(k.spill_bytes, 0) << k.name << "\n" << k.log;
    EXPECT_EQ(k.stack_bytes, 0) << k.name;
    EXPECT_GT(k.registers, 0) << k.name;
    EXPECT_LE(k.registers, 128) << k.name;  // 65536 / (2 blocks x 256 threads)
    EXPECT_NE(k.ptx.find("mma.sync.aligned.m16n8k16"), std::string::npos) << k.name;
    EXPECT_NE(k.ptx.find("L1::no_allocate"), std::string::npos) << k.name;
  }
}

}  // namespace
}  // namespace kiln
