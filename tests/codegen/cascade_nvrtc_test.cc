// NVRTC compiles the cascade kernels (the multi-query prefix kernel and the decode kernel's
// CASCADE form) for bf16 and f16, head_dim 64 and 128, GQA groups 1, 4 and 8, on sm_90a and sm_80,
// without register spills; the prefix kernel loads each K/V tile into shared memory once for the
// block (cp.async) and its mma path is the tensor cores'; the shared memory codegen gives the
// prefix launches is the kernel's own layout; fp8e4m3 caches are refused by name. No GPU needed.
#include "codegen/families/cascade_attention.h"

#include <gtest/gtest.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "codegen/kernel_cache.h"
#include "codegen/kernel_source.h"
#include "codegen/nvrtc_compiler.h"
#include "tests/codegen/codegen_test_util.h"

namespace kiln {
namespace {

TEST(CascadeNvrtc, KernelsCompileWithoutSpills) {
  if (!nvrtc_available()) GTEST_SKIP() << "built without NVRTC";
  std::vector<KernelJob> jobs;
  for (DType dt : {DType::kBF16, DType::kF16}) {
    for (int64_t d : {64, 128}) {
      for (int64_t g : {1, 4, 8}) {
        absl::StatusOr<std::shared_ptr<CascadePrefixSpec>> p =
            make_cascade_prefix_spec(dt, KvCacheKind::kSameAsRows, d, g);
        ASSERT_TRUE(p.ok()) << p.status();
        absl::StatusOr<std::shared_ptr<CascadeSuffixSpec>> s =
            make_cascade_suffix_spec(dt, KvCacheKind::kSameAsRows, d, g, DecodeConfig{});
        ASSERT_TRUE(s.ok()) << s.status();
        for (const KernelSpec* spec :
             {static_cast<const KernelSpec*>(p->get()), static_cast<const KernelSpec*>(s->get())}) {
          absl::StatusOr<std::string> src = emit_kernel_source(*spec);
          ASSERT_TRUE(src.ok()) << src.status();
          jobs.push_back({spec->key(), *src});
        }
      }
    }
  }
  // The prefix kernel with 8 warps (128 rows per block) and 32-row tiles also compiles.
  absl::StatusOr<std::shared_ptr<CascadePrefixSpec>> wide =
      make_cascade_prefix_spec(DType::kBF16, KvCacheKind::kSameAsRows, 128, 4, 32, 8);
  ASSERT_TRUE(wide.ok()) << wide.status();
  jobs.push_back({(*wide)->key(), *emit_kernel_source(**wide)});
  KernelCache cache(testing::fixture_kernel_cache());
  for (const char* arch : {"sm_90a", "sm_80"}) {
    absl::StatusOr<std::vector<CompiledKernel>> built = build_kernels(jobs, arch, &cache, 0);
    ASSERT_TRUE(built.ok()) << built.status();
    ASSERT_EQ(built->size(), jobs.size());
    for (const CompiledKernel& k : *built) {
      std::printf("[ cascade %s ] %-52s %3d registers, %5d B smem, %d B stack, %d B spills\n", arch,
                  k.name.c_str(), k.registers, k.shared_bytes, k.stack_bytes, k.spill_bytes);
      EXPECT_EQ(k.spill_bytes, 0) << k.name << "\n" << k.log;
      EXPECT_GT(k.registers, 0) << k.name;
      EXPECT_LE(k.registers, 255) << k.name;
      EXPECT_NE(k.ptx.find("mma.sync.aligned.m16n8k16"), std::string::npos) << k.name;
      EXPECT_NE(k.ptx.find("cp.async"), std::string::npos) << k.name;
      if (k.name.rfind("cascade_prefix", 0) == 0) {
        // K/V tiles are read from shared memory by ldmatrix, once loaded for the whole block.
        EXPECT_NE(k.ptx.find("ldmatrix"), std::string::npos) << k.name;
      }
    }
  }
}

TEST(CascadeNvrtc, KeysAndEntries) {
  auto p = *make_cascade_prefix_spec(DType::kBF16, KvCacheKind::kSameAsRows, 128, 4);
  EXPECT_EQ(p->key(), "cascade_prefix_bf16_d128_g4_kv64_w4");
  auto s = *make_cascade_suffix_spec(DType::kF16, KvCacheKind::kSameAsRows, 64, 8, DecodeConfig{});
  EXPECT_EQ(s->key(), "cascade_suffix_f16_d64_g8_kv16_w4_st2");
  // The suffix entry is the decode entry plus the cascade operands, in that order.
  std::vector<EntryDecl> decode = s->decode.entry(), entry = s->entry();
  ASSERT_EQ(entry.size(), decode.size() + 4);
  EXPECT_EQ(entry[decode.size()].name, "kv_start");
  EXPECT_EQ(entry.back().name, "prefix_splits");
  absl::StatusOr<KernelTemplate> t = s->kernel_template();
  ASSERT_TRUE(t.ok());
  EXPECT_NE(t->call.find(", false, true>"), std::string::npos) << t->call;
}

TEST(CascadeNvrtc, RefusesFp8AndBadShapes) {
  absl::StatusOr<std::shared_ptr<CascadePrefixSpec>> fp8 =
      make_cascade_prefix_spec(DType::kBF16, KvCacheKind::kFp8E4M3, 128, 4);
  EXPECT_EQ(fp8.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(fp8.status().message().find("fp8e4m3"), std::string::npos);
  EXPECT_EQ(make_cascade_suffix_spec(DType::kBF16, KvCacheKind::kFp8E4M3, 128, 4, DecodeConfig{})
                .status()
                .code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_FALSE(make_cascade_prefix_spec(DType::kBF16, KvCacheKind::kSameAsRows, 72, 4).ok());
  EXPECT_FALSE(make_cascade_prefix_spec(DType::kBF16, KvCacheKind::kSameAsRows, 128, 17).ok());
  EXPECT_FALSE(make_cascade_prefix_spec(DType::kF32, KvCacheKind::kSameAsRows, 128, 4).ok());
}

TEST(CascadeNvrtc, SharedMemorySizesAreTheKernels) {
  if (!nvrtc_available()) GTEST_SKIP() << "built without NVRTC";
  std::string src = "#include \"cascade_attention.cuh\"\n";
  for (auto [d, tile, warps] : {std::tuple{64, 64, 4}, {128, 64, 4}, {128, 32, 8}, {64, 16, 1}}) {
    auto s = *make_cascade_prefix_spec(DType::kBF16, KvCacheKind::kSameAsRows, d, 4, tile, warps);
    absl::StrAppend(&src, "static_assert(kiln_k::CascadePrefixSmem<kiln_k::bf16, ", d, ", ", tile,
                    ", ", warps, ">::kBytes == ", s->shared_bytes(), ", \"prefix d", d, "\");\n");
  }
  absl::StrAppend(&src, "extern \"C\" __global__ void cascade_smem_sizes_agree() {}\n");
  absl::StatusOr<std::vector<CompiledKernel>> built =
      build_kernels({{"cascade_smem_sizes_agree", src}}, "sm_90a", nullptr, 1);
  ASSERT_TRUE(built.ok()) << built.status() << "\n" << src;
}

TEST(CascadeNvrtc, PrefixSplitsFillTheGpuWithinLimits) {
  auto p = *make_cascade_prefix_spec(DType::kBF16, KvCacheKind::kSameAsRows, 128, 4);
  // Batch 16 x G 4 = 64 rows: one row block per KV head, so the 32k prefix is split to fill the
  // grid, capped; a 1k prefix keeps >= 512 rows per split; batch 256 needs few splits.
  EXPECT_EQ(cascade_prefix_splits(*p, 64, 8, 32768), kMaxCascadePrefixSplits);
  EXPECT_EQ(cascade_prefix_splits(*p, 64, 8, 1024), 2);
  EXPECT_EQ(cascade_prefix_splits(*p, 1024, 8, 32768), 5);
  EXPECT_EQ(cascade_prefix_splits(*p, 64, 8, 1), 1);
}

}  // namespace
}  // namespace kiln
