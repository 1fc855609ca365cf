// The persistent decode kernel's lowering (codegen/families/persistent_decode.h) on SmolLM2's fused
// step graph: its stages are exactly the launches a small-batch decode step runs (sampling
// aside), in program order; layers share kinds; the address table lists every stage's pointer
// arguments in entry order; its launch takes the kinds' integer expressions; the generated source
// compiles with NVRTC without spills (no GPU needed); and what it cannot take is an error that
// names the op.
#include "codegen/families/persistent_decode.h"

#include <gtest/gtest.h>

#include <set>

#include "codegen/kernel_cache.h"
#include "codegen/kernel_source.h"
#include "codegen/lowering.h"
#include "codegen/nvrtc_compiler.h"
#include "plan/launch_binding.h"
#include "plan/launch_expr.h"
#include "plan/plan_file.h"
#include "plan/plan_json.h"
#include "tests/codegen/codegen_test_util.h"

namespace kiln {
namespace {

LoweringOptions persistent_options(int64_t max_sequences = kGemvMaxRows) {
  LoweringOptions o;
  o.gemv.default_choice = GemvChoice::kGemv;  // what `kiln compile --persistent` sets
  o.persistent = PersistentOptions{max_sequences};
  return o;
}

using testing::AnyAddress;

// Whether `l` runs in a decode step of `s` sequences.
bool runs_at(const PlanLaunch& l, int64_t s) {
  if (!launch_runs_in(l.rule.when, false)) return false;
  if (l.rule.bound.empty()) return true;
  absl::StatusOr<int64_t> v = eval_launch_expr(l.rule.bound.expr, {{"T", s}, {"S", s}});
  return v.ok() && bound_admits(l.rule.bound, *v);
}

TEST(PersistentDecode, StagesAreTheDecodeStepsLaunchesInOrder) {
  const int layers = 3;
  std::unique_ptr<Graph> g = testing::fused_graph(testing::smollm2_config(layers));
  ASSERT_NE(g, nullptr);
  absl::StatusOr<LoweredGraph> l = lower_graph(*g, persistent_options());
  ASSERT_TRUE(l.ok()) << l.status();
  ASSERT_TRUE(l->persistent.has_value());
  const PlanPersistent& ps = *l->persistent;
  const PlanLaunch& launch = l->launches[ps.launch];
  ASSERT_EQ(l->kernels[launch.kernel].family, KernelFamily::kPersistentDecode);
  EXPECT_EQ(launch.rule.when, StepKind::kDecode);
  EXPECT_EQ(launch.rule.bound, (StepBound{"S", 0, kGemvMaxRows}));
  // The stages: every other launch that runs at S = 1 and at S = 16, except sampling.
  std::vector<int> expect;
  for (size_t i = 0; i < l->launches.size(); ++i) {
    const PlanLaunch& x = l->launches[i];
    if (static_cast<int>(i) == ps.launch || x.node < 0) continue;
    EXPECT_EQ(runs_at(x, 1), runs_at(x, kGemvMaxRows)) << l->kernels[x.kernel].key;
    if (runs_at(x, 1)) expect.push_back(static_cast<int>(i));
  }
  EXPECT_EQ(ps.stages, expect);
  // A decode step of SmolLM2 with every matmul a GEMV: the embedding; per layer the QKV GEMV
  // (norm prologue), rope + KV append, attention, o GEMV, gate/up GEMV (norm, SwiGLU), down GEMV;
  // then the last-token rows, the final norm, the LM head GEMV and the logits cast.
  EXPECT_EQ(ps.stages.size(), 1u + 6 * layers + 4);
  EXPECT_LT(ps.launch, ps.stages.front());
  EXPECT_EQ(launch.node, l->launches[ps.stages.front()].node);

  const auto& spec = static_cast<const PersistentDecodeSpec&>(*l->specs[launch.kernel]);
  EXPECT_EQ(spec.stage_kinds.size(), ps.stages.size());
  EXPECT_EQ(spec.kinds.size(), 1u + 6 + 4);  // the layers' stages share their kinds
  EXPECT_EQ(spec.threads, 256);
  std::set<std::string> keys;
  for (const PersistentKind& k : spec.kinds) keys.insert(k.spec->key());
  EXPECT_TRUE(keys.count("gemv_bf16_n960_k576_rt1_w8_u4_norm"));
  EXPECT_TRUE(keys.count("gemv_bf16_n3072_k576_rt2_w8_u2_swiglu_norm"));
  EXPECT_TRUE(keys.count("flash_attention_decode_bf16_d64_g3_kv16_w4_st2"));

  // The address table: each stage's pointer arguments, in stage and entry order.
  const PlanWorkspace* table = nullptr;
  const PlanWorkspace* counters = nullptr;
  for (const PlanWorkspace& w : l->workspaces) {
    if (w.name == launch.args[0].value) table = &w;
    if (w.name == launch.args[1].value) counters = &w;
  }
  ASSERT_TRUE(table && counters);
  std::vector<LaunchArg> want;
  for (int s : ps.stages) {
    const PlanLaunch& x = l->launches[s];
    const PlanKernel& k = l->kernels[x.kernel];
    for (size_t j = 0; j < x.args.size(); ++j) {
      if (k.params[j].type == ParamType::kPointer) want.push_back(x.args[j]);
    }
  }
  EXPECT_EQ(table->addresses, want);
  EXPECT_EQ(table->bytes, absl::StrCat(8 * want.size()));
  EXPECT_FALSE(table->zeroed);
  EXPECT_TRUE(counters->zeroed);
  EXPECT_EQ(counters->bytes, absl::StrCat(4 * (ps.stages.size() + 1)));
  // Its integer arguments: the kinds' expressions of the step (T, S, the decode split count, ...),
  // each once; the constant ones are baked into the source.
  ASSERT_EQ(launch.args.size(), 2 + spec.int_params.size());
  std::set<std::string> exprs;
  for (size_t j = 2; j < launch.args.size(); ++j) {
    EXPECT_EQ(launch.args[j].kind, LaunchArg::Kind::kInt);
    EXPECT_TRUE(exprs.insert(launch.args[j].expr).second) << launch.args[j].expr;
  }
  EXPECT_TRUE(exprs.count("T"));
  EXPECT_TRUE(exprs.count("S"));
  AnyAddress any;
  EXPECT_TRUE(bind_launch(l->kernels[launch.kernel], launch, {{"T", 3}, {"S", 3}, {"K", 700}}, any)
                  .ok());

  // The key follows what the source bakes in: another stage count is another kernel.
  std::unique_ptr<Graph> g4 = testing::fused_graph(testing::smollm2_config(layers + 1));
  absl::StatusOr<LoweredGraph> l4 = lower_graph(*g4, persistent_options());
  ASSERT_TRUE(l4.ok()) << l4.status();
  EXPECT_NE(l4->kernels[l4->persistent->launch].key, l->kernels[launch.kernel].key);
}

TEST(PersistentDecode, TheSourceCompilesWithoutSpills) {
  if (!nvrtc_available()) GTEST_SKIP() << "built without NVRTC";
  std::unique_ptr<Graph> g = testing::fused_graph(testing::smollm2_config(2));
  ASSERT_NE(g, nullptr);
  absl::StatusOr<LoweredGraph> l = lower_graph(*g, persistent_options());
  ASSERT_TRUE(l.ok()) << l.status();
  const KernelSpec& spec = *l->specs[l->launches[l->persistent->launch].kernel];
  absl::StatusOr<std::string> src = emit_kernel_source(spec);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_NE(src->find("#define KILN_PERSISTENT 1"), std::string::npos);
  EXPECT_NE(src->find("kiln_k::persistent_tasks<"), std::string::npos);
  EXPECT_NE(src->find("gemv_prefetch_l2<"), std::string::npos);
  KernelCache cache(testing::fixture_kernel_cache());
  absl::StatusOr<std::vector<CompiledKernel>> built =
      build_kernels({{spec.key(), *src}}, "sm_90a", &cache, 0);
  ASSERT_TRUE(built.ok()) << built.status();
  const CompiledKernel& k = (*built)[0];
  std::printf("[ persistent ] %s: %d registers, %d B smem, %d B spills\n", k.name.c_str(),
              k.registers, k.shared_bytes, k.spill_bytes);
  EXPECT_EQ(k.spill_bytes, 0) << k.log;
  EXPECT_LE(k.registers, 255);
  // One block of 256 threads per SM at least: registers and static shared memory fit.
  EXPECT_LE(k.registers * 256, 65536);
  // Static shared memory within the 48 KB a block may declare (the GEMV's partial sums are
  // dynamic here), and the dynamic part what the largest kind needs.
  EXPECT_LE(k.shared_bytes, 48 * 1024);
  const auto& ps = static_cast<const PersistentDecodeSpec&>(spec);
  EXPECT_GE(ps.dynamic_shared_bytes, 8 * 32 * 17 * 4);  // a two-row-tile GEMV's `part`
  EXPECT_NE(k.ptx.find("globaltimer"), std::string::npos);  // the wait's watchdog
  EXPECT_NE(k.ptx.find("prefetch.global.L2"), std::string::npos);
}

TEST(PersistentDecode, ACublasGemmInTheStepIsAnErrorNamingIt) {
  std::unique_ptr<Graph> g = testing::fused_graph(testing::smollm2_config(2));
  ASSERT_NE(g, nullptr);
  LoweringOptions o = persistent_options();
  o.gemv.default_choice = GemvChoice::kHeuristic;  // the 49152 x 576 LM head stays on cuBLASLt
  absl::StatusOr<LoweredGraph> l = lower_graph(*g, o);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("--persistent"), std::string::npos) << l.status();
  EXPECT_NE(l.status().message().find("N = 49152"), std::string::npos) << l.status();
  EXPECT_NE(l.status().message().find("GEMV path"), std::string::npos) << l.status();
}

TEST(PersistentDecode, TheBatchBoundIsChecked) {
  std::unique_ptr<Graph> g = testing::fused_graph(testing::smollm2_config(2));
  ASSERT_NE(g, nullptr);
  for (int64_t bad : {0, 17}) {
    absl::StatusOr<LoweredGraph> l = lower_graph(*g, persistent_options(bad));
    ASSERT_FALSE(l.ok()) << bad;
    EXPECT_NE(l.status().message().find("1 to 16"), std::string::npos) << l.status();
  }
  absl::StatusOr<LoweredGraph> l = lower_graph(*g, persistent_options(4));
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->launches[l->persistent->launch].rule.bound, (StepBound{"S", 0, 4}));
}

// The plan's form: the persistent section and the address table round-trip through a plan file,
// and a persistent section naming launches the plan does not have is refused at load.
TEST(PersistentDecode, RoundTripsThroughAPlanFile) {
  std::unique_ptr<Graph> g = testing::fused_graph(testing::smollm2_config(2));
  ASSERT_NE(g, nullptr);
  absl::StatusOr<LoweredGraph> l = lower_graph(*g, persistent_options());
  ASSERT_TRUE(l.ok()) << l.status();
  Plan p;
  p.arch = "sm_90a";
  p.model = testing::smollm2_config(2);
  p.kernels = l->kernels;
  p.launches = l->launches;
  p.workspaces = l->workspaces;
  p.persistent = l->persistent;
  const std::string path = testing::unique_temp_path("persistent.kplan");
  ASSERT_TRUE(write_plan(path, p, {}).ok());
  absl::StatusOr<LoadedPlan> back = read_plan(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_TRUE(back->plan.persistent.has_value());
  EXPECT_EQ(back->plan.persistent->launch, p.persistent->launch);
  EXPECT_EQ(back->plan.persistent->stages, p.persistent->stages);
  ASSERT_EQ(back->plan.workspaces.size(), p.workspaces.size());
  for (size_t i = 0; i < p.workspaces.size(); ++i) {
    EXPECT_EQ(back->plan.workspaces[i].addresses, p.workspaces[i].addresses);
    EXPECT_EQ(back->plan.workspaces[i].zeroed, p.workspaces[i].zeroed);
  }
  for (auto edit : {+1, -1}) {
    Plan bad = p;
    if (edit > 0) {
      bad.persistent->stages.push_back(static_cast<int>(bad.launches.size()));
    } else {
      std::swap(bad.persistent->stages[0], bad.persistent->stages[1]);
    }
    ASSERT_TRUE(write_plan(path, bad, {}).ok());
    absl::StatusOr<LoadedPlan> r = read_plan(path);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("persistent.stages"), std::string::npos) << r.status();
  }
  std::remove(path.c_str());
}

}  // namespace
}  // namespace kiln
