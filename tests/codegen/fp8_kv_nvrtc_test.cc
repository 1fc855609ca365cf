// NVRTC compiles every kernel of an fp8e4m3 KV cache (`kiln compile --kv-dtype fp8e4m3`): the
// quantizing KV appends (kv_append, rope_kv_append) and the dequantizing attention kernels
// (simple and pipelined prefill, split-KV decode with its tuning knobs, inside the persistent
// decode kernel too) at head_dim 64, 80 and 128, bf16 and f16, for sm_80 (software e4m3
// conversion) and sm_90a (the PTX cvt.rn.satfinite.e4m3x2.f32), with no stack frame and no
// register spills; the shared-memory sizes codegen gives the launches are the kernels' own
// (checked by static_asserts NVRTC compiles). No GPU is needed.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "codegen/families/flash_attention_decode.h"
#include "codegen/families/flash_attention_prefill.h"
#include "codegen/families/persistent_decode.h"
#include "codegen/families/rope.h"
#include "codegen/kernel_cache.h"
#include "codegen/kernel_source.h"
#include "codegen/lowering.h"
#include "codegen/nvrtc_compiler.h"
#include "tests/codegen/codegen_test_util.h"

namespace kiln {
namespace {

#define SKIP_WITHOUT_NVRTC() \
  if (!nvrtc_available()) GTEST_SKIP() << "built without NVRTC"

// head_dim 80 (an odd number of 16-wide k steps: the decode's ldmatrix.x2 tail, and 5 pieces of
// 16 codes per row, not a whole number per lane), GQA 4.
ModelConfig d80_config() {
  ModelConfig c = testing::smollm2_config(1);
  c.hidden_size = 640;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 80;
  c.intermediate_size = 512;
  c.vocab_size = 256;
  return c;
}

struct Variant {
  std::string name;
  ModelConfig config;
  DType dtype;
  std::string attrs;  // flash_attention attributes set before lowering ("key=value;...")
  bool persistent = false;
};

// The fp8e4m3 graph of `v` lowered; its attention nodes get v.attrs.
absl::StatusOr<LoweredGraph> lower_variant(const Variant& v, std::unique_ptr<Graph>& g) {
  g = testing::fused_graph(v.config, v.dtype, DType::kFP8E4M3);
  if (g == nullptr) return absl::InternalError("no graph");
  for (const auto& n : g->nodes()) {
    if (n->op != OpKind::kFlashAttention) continue;
    if (v.attrs == "pipelined") n->attrs.set("prefill_kernel", std::string("pipelined"));
    if (v.attrs == "decode_knobs") {
      n->attrs.set("decode_tile_kv", int64_t{32});
      n->attrs.set("decode_warps", int64_t{8});
      n->attrs.set("decode_stages", int64_t{3});
      n->attrs.set("softmax", std::string("unified_max"));
    }
    if (v.attrs == "decode_tile64") {
      n->attrs.set("decode_tile_kv", int64_t{64});
      n->attrs.set("decode_warps", int64_t{2});
      n->attrs.set("decode_stages", int64_t{4});
    }
  }
  LoweringOptions o;
  if (v.persistent) {
    o.gemv.default_choice = GemvChoice::kGemv;
    o.persistent = PersistentOptions{};
  }
  return lower_graph(*g, o);
}

std::vector<Variant> variants() {
  const ModelConfig smol = testing::smollm2_config(1), d128 = testing::d128_llama3_config();
  return {
      {"smollm2_bf16", smol, DType::kBF16, ""},
      {"smollm2_bf16_pipelined", smol, DType::kBF16, "pipelined"},
      {"smollm2_f16_decode_knobs", smol, DType::kF16, "decode_knobs"},
      {"d128_bf16", d128, DType::kBF16, ""},
      {"d128_f16_pipelined", d128, DType::kF16, "pipelined"},
      {"d128_bf16_decode_tile64", d128, DType::kBF16, "decode_tile64"},
      {"d80_bf16", d80_config(), DType::kBF16, ""},
      {"d80_bf16_pipelined", d80_config(), DType::kBF16, "pipelined"},
  };
}

bool is_kv_family(KernelFamily f) {
  return f == KernelFamily::kKvAppend || f == KernelFamily::kRopeKvAppend ||
         f == KernelFamily::kFlashAttentionPrefill || f == KernelFamily::kFlashAttentionDecode;
}

class Fp8KvCompile : public ::testing::TestWithParam<std::string> {};

TEST_P(Fp8KvCompile, EveryCacheKernelCompilesWithoutSpills) {
  SKIP_WITHOUT_NVRTC();
  const std::string arch = GetParam();
  std::vector<KernelJob> jobs;
  std::set<std::string> seen;
  std::map<KernelFamily, int> families;
  std::map<std::string, std::string> twins;  // fp8e4m3 rope_kv_append -> its 16-bit twin
  for (const Variant& v : variants()) {
    SCOPED_TRACE(v.name);
    std::unique_ptr<Graph> g;
    absl::StatusOr<LoweredGraph> l = lower_variant(v, g);
    ASSERT_TRUE(l.ok()) << v.name << ": " << l.status();
    for (const auto& spec : l->specs) {
      if (!is_kv_family(spec->family())) continue;
      // Every kernel that touches the cache is its fp8e4m3 variant.
      EXPECT_NE(spec->key().find("_fp8kv"), std::string::npos) << spec->key();
      ++families[spec->family()];
      if (!seen.insert(spec->key()).second) continue;
      absl::StatusOr<std::string> src = emit_kernel_source(*spec);
      ASSERT_TRUE(src.ok()) << src.status();
      jobs.push_back({spec->key(), *src});
      // rope_kv_append's sincosf keeps a stack frame for its slow argument reduction (as the rope
      // kernels do): its 16-bit-cache twin is built beside it, and the frames must be equal.
      if (spec->family() == KernelFamily::kRopeKvAppend) {
        RopeKvAppendSpec twin = static_cast<const RopeKvAppendSpec&>(*spec);
        twin.cache = KvCacheKind::kSameAsRows;
        absl::StatusOr<std::string> tsrc = emit_kernel_source(twin);
        ASSERT_TRUE(tsrc.ok()) << tsrc.status();
        twins[spec->key()] = twin.key();
        jobs.push_back({twin.key(), *tsrc});
      }
    }
  }
  // The graphs' ropes are absorbed by their attention (rope_kv_append); a kv_append of its own
  // comes from an attention whose k is no rope: d80's rotary dim equals head_dim too, so the
  // families are rope_kv_append + prefill + decode.
  EXPECT_GT(families[KernelFamily::kRopeKvAppend], 0);
  EXPECT_GT(families[KernelFamily::kFlashAttentionPrefill], 0);
  EXPECT_GT(families[KernelFamily::kFlashAttentionDecode], 0);
  // kv_append's fp8e4m3 variant (the lowering uses it when no rope is absorbed): one spec per
  // head size and dtype, built directly.
  for (auto [d, dt] : {std::pair{64, DType::kBF16}, {80, DType::kF16}, {128, DType::kBF16}}) {
    KvAppendSpec s;
    s.dtype = dt;
    s.cache = KvCacheKind::kFp8E4M3;
    s.head_dim = d;
    absl::StatusOr<std::string> src = emit_kernel_source(s);
    ASSERT_TRUE(src.ok()) << src.status();
    jobs.push_back({s.key(), *src});
  }
  KernelCache cache(testing::fixture_kernel_cache());
  BuildStats stats;
  absl::StatusOr<std::vector<CompiledKernel>> built = build_kernels(jobs, arch, &cache, 0, &stats);
  ASSERT_TRUE(built.ok()) << built.status();
  std::map<std::string, const CompiledKernel*> by_name;
  for (const CompiledKernel& k : *built) by_name[k.name] = &k;
  for (const CompiledKernel& k : *built) {
    if (k.name.find("_fp8kv") == std::string::npos) continue;  // a twin
    std::printf("[ fp8kv %s ] %-64s %3d registers, %5d B smem, %d B stack, %d B spills\n",
                arch.c_str(), k.name.c_str(), k.registers, k.shared_bytes, k.stack_bytes,
                k.spill_bytes);
    EXPECT_EQ(k.spill_bytes, 0) << k.name << "\n" << k.log;
    if (auto twin = twins.find(k.name); twin != twins.end()) {
      EXPECT_EQ(k.stack_bytes, by_name.at(twin->second)->stack_bytes) << k.name << "\n" << k.log;
    } else {
      EXPECT_EQ(k.stack_bytes, 0) << k.name << "\n" << k.log;
    }
    const bool appends =
        k.name.rfind("kv_append", 0) == 0 || k.name.rfind("rope_kv_append", 0) == 0;
    if (appends) {
      // sm_89+ converts with the hardware instruction; sm_80 has none (fp8_encode_soft).
      const bool hw = k.ptx.find("cvt.rn.satfinite.e4m3x2.f32") != std::string::npos;
      EXPECT_EQ(hw, arch != "sm_80") << k.name;
    } else {
      EXPECT_NE(k.ptx.find("mma.sync.aligned.m16n8k16"), std::string::npos) << k.name;
      EXPECT_LE(k.shared_bytes, 48 * 1024) << k.name << ": above the static shared-memory limit";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Arch, Fp8KvCompile, ::testing::Values("sm_80", "sm_90a"));

// The persistent decode kernel takes the fp8e4m3 decode launches (the quantizing append and the
// dequantizing decode attention) as tasks.
TEST(Fp8KvNvrtc, PersistentDecodeKernelCompilesWithoutSpills) {
  SKIP_WITHOUT_NVRTC();
  Variant v{"smollm2_persistent", testing::smollm2_config(2), DType::kBF16, "", true};
  std::unique_ptr<Graph> g;
  absl::StatusOr<LoweredGraph> l = lower_variant(v, g);
  ASSERT_TRUE(l.ok()) << l.status();
  ASSERT_TRUE(l->persistent.has_value());
  const KernelSpec& spec = *l->specs[l->launches[l->persistent->launch].kernel];
  absl::StatusOr<std::string> src = emit_kernel_source(spec);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_NE(src->find("rope_kv_append_fp8<"), std::string::npos);
  EXPECT_NE(src->find("typedef kiln_k::fp8e4m3 kiln_kv_t;"), std::string::npos);
  KernelCache cache(testing::fixture_kernel_cache());
  absl::StatusOr<std::vector<CompiledKernel>> built =
      build_kernels({{spec.key(), *src}}, "sm_90a", &cache, 0);
  ASSERT_TRUE(built.ok()) << built.status();
  const CompiledKernel& k = (*built)[0];
  std::printf("[ fp8kv persistent ] %s: %d registers, %d B smem, %d B spills\n", k.name.c_str(),
              k.registers, k.shared_bytes, k.spill_bytes);
  EXPECT_EQ(k.spill_bytes, 0) << k.log;
  EXPECT_LE(k.registers * 256, 65536);
}

// codegen sizes the decode's dynamic shared memory (FlashAttentionDecodeSpec::shared_bytes) and
// the pipelined prefill's (dynamic_shared_bytes) by formulas of its own; the kernels lay it out
// by theirs (DecodeSmem, prefill_pipelined_smem_bytes). A source of static_asserts that the two
// agree, for bf16 and fp8e4m3 caches and several layouts, must compile.
TEST(Fp8KvNvrtc, SharedMemorySizesAreTheKernels) {
  SKIP_WITHOUT_NVRTC();
  std::string src =
      "#include \"flash_attention_decode.cuh\"\n#include "
      "\"flash_attention_prefill_pipelined.cuh\"\n";
  for (KvCacheKind cache : {KvCacheKind::kSameAsRows, KvCacheKind::kFp8E4M3}) {
    const char* c = cache == KvCacheKind::kFp8E4M3 ? "kiln_k::fp8e4m3" : "kiln_k::bf16";
    for (auto [d, tile, warps, stages] : {std::tuple{64, 16, 4, 2},
                                          {128, 16, 4, 2},
                                          {128, 64, 2, 4},
                                          {80, 32, 8, 3},
                                          {256, 16, 4, 1}}) {
      FlashAttentionDecodeSpec s;
      s.cache = cache;
      s.head_dim = d, s.tile_kv = tile, s.warps = warps, s.stages = stages;
      absl::StrAppend(&src, "static_assert(kiln_k::DecodeSmem<kiln_k::bf16, ", c, ", ", d, ", ",
                      tile, ", ", warps, ", ", stages, ">::kBytes == ", s.shared_bytes(),
                      ", \"decode d", d, "\");\n");
    }
    for (auto [d, tq, tkv, stages] :
         {std::tuple{64, 64, 128, 2}, {128, 128, 64, 2}, {128, 128, 32, 4}, {80, 64, 64, 3}}) {
      FlashAttentionPrefillSpec s;
      s.kernel = PrefillKernel::kPipelined;
      s.cache = cache;
      s.head_dim = d, s.tile_q = tq, s.tile_kv = tkv, s.stages = stages;
      absl::StrAppend(&src, "static_assert(kiln_k::prefill_pipelined_smem_bytes<kiln_k::bf16, ", c,
                      ", ", d, ", ", tq, ", ", tkv, ", ", stages,
                      ">() == ", s.dynamic_shared_bytes(), ", \"prefill d", d, "\");\n");
    }
  }
  absl::StrAppend(&src, "extern \"C\" __global__ void smem_sizes_agree() {}\n");
  absl::StatusOr<std::vector<CompiledKernel>> built =
      build_kernels({{"smem_sizes_agree", src}}, "sm_90a", nullptr, 1);
  ASSERT_TRUE(built.ok()) << built.status() << "\n" << src;
}

}  // namespace
}  // namespace kiln
