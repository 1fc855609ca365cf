// `kiln compile` as a library: a fixture model through build_llama, the default pipeline, the
// lowering and NVRTC into a plan file that loads back typed; packed weights; the in-memory
// build_plan without kernels (what `kiln run model --device cpu` uses on a machine without NVRTC).
#include "codegen/compile_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "codegen/nvrtc_compiler.h"
#include "plan/plan_file.h"
#include "plan/plan_summary.h"
#include "tests/codegen/codegen_test_util.h"

namespace kiln {
namespace {

TEST(CompileModel, TinyModelRoundTripsThroughAPlanFile) {
  if (!nvrtc_available()) GTEST_SKIP() << "built without NVRTC";
  CompileOptions o;
  o.model = testing::fixture("tiny");
  o.output = testing::unique_temp_path("tiny.kplan");
  o.arch = "sm_80";
  o.cache_dir = testing::fixture_kernel_cache();
  absl::StatusOr<CompileReport> r = compile_model(o);
  ASSERT_TRUE(r.ok()) << r.status();
  PlanLoadOptions lo;
  lo.weights = WeightCheck::kChecksum;
  lo.device_arch = "sm_80";
  absl::StatusOr<LoadedPlan> p = read_plan(o.output, lo);
  ASSERT_TRUE(p.ok()) << p.status();
  const Plan& plan = p->plan;
  EXPECT_EQ(static_cast<int>(plan.kernels.size()), r->kernels);
  EXPECT_EQ(static_cast<int>(plan.launches.size()), r->launches);
  EXPECT_EQ(static_cast<int>(plan.weights.size()), r->weights);
  EXPECT_GT(r->weights, 0);
  std::set<KernelFamily> families;
  for (const PlanKernel& k : plan.kernels) {
    families.insert(k.family);
    EXPECT_FALSE(k.params.empty()) << k.key;
    EXPECT_GT(p->blob(k.cubin_blob).size(), 0u) << k.key;
    EXPECT_GT(k.registers, 0) << k.key;
  }
  for (KernelFamily f :
       {KernelFamily::kFlashAttentionPrefill, KernelFamily::kFlashAttentionDecode,
        KernelFamily::kRopeKvAppend, KernelFamily::kRmsNorm, KernelFamily::kEmbedding,
        KernelFamily::kSampling}) {
    EXPECT_TRUE(families.count(f)) << family_name(f);
  }
  EXPECT_NE(plan.ir.find("flash_attention"), std::string::npos);
  EXPECT_EQ(plan.kv.num_layers, plan.model.num_layers);
  EXPECT_EQ(plan.kv.page_size, o.limits.page_size);
  ASSERT_TRUE(plan.memory.has_value());
  EXPECT_GT(plan.memory->arena_bytes, 0);
  const std::string prefill = [&] {
    for (const PlanKernel& k : plan.kernels) {
      if (k.family == KernelFamily::kFlashAttentionPrefill) return k.key;
    }
    return std::string();
  }();
  absl::StatusOr<std::string> ptx = plan_kernel_source(*p, prefill, true);
  ASSERT_TRUE(ptx.ok()) << ptx.status();
  EXPECT_NE(ptx->find("mma.sync"), std::string::npos);
  EXPECT_NE(plan_summary(*p).find(plan.model.summary()), std::string::npos);

  // Packed weights live in blobs.
  o.pack_weights = true;
  o.output = testing::unique_temp_path("tiny-packed.kplan");
  ASSERT_TRUE(compile_model(o).ok());
  p = read_plan(o.output, lo);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_FALSE(p->plan.weights.empty());
  EXPECT_TRUE(p->plan.weights[0].packed());
  // A bad arch is refused up front.
  o.arch = "sm_70";
  EXPECT_FALSE(compile_model(o).ok());
}

// kiln compile --tp 2: one plan file holding every rank's kernels (the same for each rank: the
// program is SPMD) compiled by NVRTC, per-rank GEMM shapes, the collectives as plan entries, and
// each rank's weight slices referenced into the checkpoint; `kiln inspect` shows a rank's memory.
TEST(CompileModel, TensorParallelPlanCompilesPerRankKernelsAndCollectives) {
  if (!nvrtc_available()) GTEST_SKIP() << "built without NVRTC";
  CompileOptions o;
  o.model = testing::fixture("tiny-gqa");  // hidden 64, 4 query heads, 2 KV heads, tied
  o.output = testing::unique_temp_path("tiny-tp2.kplan");
  o.arch = "sm_80";
  o.cache_dir = testing::fixture_kernel_cache();
  o.tensor_parallel = 2;
  absl::StatusOr<CompileReport> r = compile_model(o);
  ASSERT_TRUE(r.ok()) << r.status();
  PlanLoadOptions lo;
  lo.weights = WeightCheck::kChecksum;
  absl::StatusOr<LoadedPlan> p = read_plan(o.output, lo);
  ASSERT_TRUE(p.ok()) << p.status();
  const Plan& plan = p->plan;
  EXPECT_EQ(plan.ranks, 2);
  EXPECT_NE(plan.ir.find("\n  ranks 2\n"), std::string::npos);
  for (const PlanKernel& k : plan.kernels) EXPECT_GT(p->blob(k.cubin_blob).size(), 0u) << k.key;
  // Each rank's KV cache holds its one KV head; its GEMMs are a rank's share.
  EXPECT_EQ(plan.kv.num_kv_heads, 1);
  std::multiset<std::pair<int64_t, int64_t>> nk;
  for (const PlanGemm& g : plan.gemms) nk.insert({g.n, g.k});
  EXPECT_EQ(nk.count({32 + 16 + 16, 64}), 2u);  // q (2 heads) + k + v (1 head each) of 16
  EXPECT_EQ(nk.count({64, 32}), 2u);            // o_proj: row-parallel, K split
  EXPECT_EQ(nk.count({96, 64}), 2u);            // gate + up, 48 each
  EXPECT_EQ(nk.count({64, 48}), 2u);            // down: row-parallel
  EXPECT_EQ(nk.count({256, 64}), 1u);           // the LM head's half of the vocabulary
  ASSERT_EQ(plan.collectives.size(), 5u);
  int reduces = 0;
  for (const PlanCollective& c : plan.collectives) {
    if (c.kind == CollectiveKind::kAllReduce) {
      ++reduces;
      EXPECT_EQ(c.dtype, DType::kBF16);
      EXPECT_EQ(c.outer, "T");
      EXPECT_EQ(c.inner, 64);
    } else {
      EXPECT_EQ(c.dtype, DType::kF32);  // the logits, after their cast
      EXPECT_EQ(c.outer, "S");
      EXPECT_EQ(c.inner, 256);
    }
  }
  EXPECT_EQ(reduces, 4);
  // Every sharded param has one derived weight per rank, over the checkpoint's tensors.
  const PlanWeight* o0 = plan.find_weight("layers.0.o_proj.shard", 0);
  const PlanWeight* o1 = plan.find_weight("layers.0.o_proj.shard", 1);
  ASSERT_NE(o0, nullptr);
  ASSERT_NE(o1, nullptr);
  EXPECT_EQ(o1->parts,
            (std::vector<PlanWeightPart>{{"layers.0.o_proj", SliceAxis::kCols, 32, 64}}));
  EXPECT_EQ(o1->shape, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(plan.find_weight("layers.0.o_proj.shard"), nullptr);
  const PlanWeight* qkv = plan.find_weight("layers.0.q_proj_k_proj_v_proj.shard", 1);
  ASSERT_NE(qkv, nullptr);
  EXPECT_EQ(qkv->parts[0], (PlanWeightPart{"layers.0.q_proj", SliceAxis::kRows, 32, 64}));
  EXPECT_EQ(plan.find_weight("embed", 1)->rank, -1);  // the embedding: whole on every rank
  const std::string summary = plan_summary(*p);
  EXPECT_THAT(summary, ::testing::HasSubstr("tensor parallel: 2 ranks"));
  EXPECT_THAT(summary, ::testing::HasSubstr("(1 of the model's 2 KV heads)"));
  EXPECT_THAT(summary, ::testing::HasSubstr("4 x all_reduce bf16 of T x 64 per step"));
  EXPECT_THAT(summary, ::testing::HasSubstr("1 x all_gather f32 of S x 256 per step"));
}

// --persistent with --tp: refused by name (the collectives are NCCL calls between launches).
TEST(CompileModel, APersistentTensorParallelPlanIsRefused) {
  CompileOptions o;
  o.model = testing::fixture("tiny-gqa");
  o.output = testing::unique_temp_path("tiny-tp2-persistent.kplan");
  o.build_kernels = false;
  o.tensor_parallel = 2;
  o.persistent = PersistentOptions{};
  absl::StatusOr<CompileReport> r = compile_model(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("tensor-parallel plan has no persistent decode kernel"),
            std::string::npos)
      << r.status();
}

// A sharded IR dump (the final IR of a --tp 2 plan) compiles again with --from-ir, with or without
// --tp 2: the graph says its ranks, so the plan is the same tensor-parallel plan.
TEST(CompileModel, ShardedIrDumpRecompiles) {
  CompileOptions o;
  o.model = testing::fixture("tiny-qwen2");
  o.build_kernels = false;
  o.tensor_parallel = 2;
  absl::StatusOr<CompiledPlan> built = build_plan(o);
  ASSERT_TRUE(built.ok()) << built.status();
  const std::string path = testing::unique_temp_path("tp2.kir");
  std::ofstream(path) << built->plan.ir;
  for (int tp : {1, 2}) {
    CompileOptions again = o;
    again.from_ir = path;
    again.tensor_parallel = tp;
    absl::StatusOr<CompiledPlan> rebuilt = build_plan(again);
    ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
    EXPECT_EQ(rebuilt->plan.ranks, 2);
    EXPECT_EQ(rebuilt->plan.ir, built->plan.ir);
    EXPECT_EQ(rebuilt->plan.weights.size(), built->plan.weights.size());
  }
  CompileOptions four = o;
  four.from_ir = path;
  four.tensor_parallel = 4;
  EXPECT_THAT(build_plan(four).status().message(),
              ::testing::HasSubstr("already sharded over 2 ranks, not 4"));
}

TEST(CompileModel, InMemoryPlanWithoutKernels) {
  CompileOptions o;
  o.model = testing::fixture("tiny-gqa");
  o.build_kernels = false;
  absl::StatusOr<CompiledPlan> built = build_plan(o);
  ASSERT_TRUE(built.ok()) << built.status();
  const Plan& plan = built->plan;
  EXPECT_TRUE(built->blobs.empty());  // weights referenced, no kernels built
  EXPECT_FALSE(plan.kernels.empty());
  for (const PlanKernel& k : plan.kernels) {
    EXPECT_EQ(k.cubin_blob, -1) << k.key;
    EXPECT_FALSE(k.params.empty()) << k.key;
  }
  EXPECT_FALSE(plan.ir.empty());
  EXPECT_GT(plan.kv.bytes_per_page(), 0);
  EXPECT_NE(plan.find_weight("embed"), nullptr);
  // fuse-horizontal's stacked Q/K/V weight is a derived plan weight over the checkpoint's rows.
  const PlanWeight* qkv = plan.find_weight("layers.0.q_proj_k_proj_v_proj");
  ASSERT_NE(qkv, nullptr);
  ASSERT_EQ(qkv->parts.size(), 3u);
  EXPECT_EQ(qkv->parts[0].source, "layers.0.q_proj");
  EXPECT_EQ(qkv->parts[2].source, "layers.0.v_proj");
  EXPECT_EQ(qkv->shape[0], qkv->parts[0].end + qkv->parts[1].end + qkv->parts[2].end);
  EXPECT_NE(plan.ir.find("param @layers.0.q_proj_k_proj_v_proj"), std::string::npos);
  EXPECT_EQ(plan.ir.find("param @layers.0.q_proj :"), std::string::npos);
  EXPECT_EQ(built->blob(0), "");
  // It writes and loads like any plan.
  const std::string path = testing::unique_temp_path("nokernels.kplan");
  ASSERT_TRUE(write_plan(path, plan, built->blobs).ok());
  absl::StatusOr<LoadedPlan> p = read_plan(path);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->plan.ir, plan.ir);
  EXPECT_EQ(p->plan.kernels.size(), plan.kernels.size());
  EXPECT_FALSE(plan_kernel_source(*p, plan.kernels[0].key).ok());
  // `kiln inspect` counts a decode step's launches: per layer one rope_kv_append (both ropes
  // and the KV append) and no separate rope or kv_append; the stacked weights are listed apart.
  const std::string summary = plan_summary(*p);
  const int64_t layers = plan.model.num_layers;
  EXPECT_NE(summary.find(absl::StrCat(layers, " x rope_kv_append\n")), std::string::npos)
      << summary;
  EXPECT_EQ(summary.find(" x rope\n"), std::string::npos) << summary;
  EXPECT_EQ(summary.find(" x kv_append\n"), std::string::npos) << summary;
  EXPECT_NE(summary.find(absl::StrCat(2 * layers, " derived")), std::string::npos) << summary;
}

// An edited IR whose derived param names rows the checkpoint does not have fails at compile
// time, naming the param and the part.
TEST(CompileModel, DerivedParamsOfAnEditedIrAreCheckedAgainstTheCheckpoint) {
  CompileOptions o;
  o.model = testing::fixture("tiny-gqa");
  o.build_kernels = false;
  absl::StatusOr<CompiledPlan> built = build_plan(o);
  ASSERT_TRUE(built.ok()) << built.status();
  auto compile_edited = [&](const std::string& from, const std::string& to) {
    std::string ir = built->plan.ir;
    const size_t at = ir.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) ir.replace(at, from.size(), to);
    const std::string path = testing::unique_temp_path("edited.kir");
    std::ofstream(path) << ir;
    CompileOptions e = o;
    e.from_ir = path;
    return build_plan(e).status();
  };
  EXPECT_TRUE(compile_edited("\"layers.0.k_proj\"", "\"layers.0.k_proj\"").ok());
  absl::Status missing = compile_edited("\"layers.0.k_proj\"", "\"layers.0.nope\"");
  EXPECT_THAT(missing.message(), ::testing::HasSubstr("the plan has no weight 'layers.0.nope'"));
  EXPECT_THAT(missing.message(), ::testing::HasSubstr("@layers.0.q_proj_k_proj_v_proj"));
  absl::Status other = compile_edited("\"layers.0.k_proj\"", "\"layers.0.down_proj\"");
  EXPECT_THAT(other.message(), ::testing::HasSubstr("'layers.0.down_proj'"));
}

}  // namespace
}  // namespace kiln
