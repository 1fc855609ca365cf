// The cascade forms in a plan (codegen/families/cascade_attention.h): every decode attention of a
// bf16 plan gets a cascade_prefix and a cascade_suffix launch (StepKind cascade, which no plain
// step runs) recorded in Plan::cascades beside its plain decode launch; they survive a plan file,
// and the persistent decode kernel's inserted launch; an fp8e4m3 cache gets none; the prefix split
// expression is the kernel's split policy; a plan file whose cascade names the wrong launches is
// refused.
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "codegen/compile_model.h"
#include "codegen/families/cascade_attention.h"
#include "plan/launch_binding.h"
#include "plan/launch_expr.h"
#include "plan/plan_file.h"
#include "plan/plan_summary.h"
#include "tests/codegen/codegen_test_util.h"

namespace kiln {
namespace {

absl::StatusOr<CompiledPlan> tiny_plan(DType kv_dtype = DType::kBF16, bool persistent = false) {
  CompileOptions o;
  o.model = testing::fixture("tiny-gqa");
  o.build_kernels = false;
  if (kv_dtype == DType::kFP8E4M3) o.limits.kv_dtype = kv_dtype;
  if (persistent) o.persistent = PersistentOptions{};
  return build_plan(o);
}

const PlanKernel& kernel_of(const Plan& p, int launch) {
  return p.kernels[p.launches[launch].kernel];
}

// Every cascade names the node's plain decode launch and its two cascade forms.
void expect_cascades(const Plan& p) {
  ASSERT_EQ(static_cast<int64_t>(p.cascades.size()), p.model.num_layers);
  for (const PlanCascade& c : p.cascades) {
    EXPECT_EQ(kernel_of(p, c.decode).family, KernelFamily::kFlashAttentionDecode);
    EXPECT_EQ(kernel_of(p, c.prefix).family, KernelFamily::kCascadePrefix);
    EXPECT_EQ(kernel_of(p, c.suffix).family, KernelFamily::kCascadeSuffix);
    EXPECT_EQ(p.launches[c.decode].rule.when, StepKind::kDecode);
    for (int l : {c.prefix, c.suffix}) {
      EXPECT_EQ(p.launches[l].rule.when, StepKind::kCascade);
      EXPECT_EQ(p.launches[l].node, p.launches[c.decode].node);
      // No plain step runs them: only a runtime choosing a cascade step does.
      EXPECT_FALSE(launch_runs_in(p.launches[l].rule.when, true));
      EXPECT_FALSE(launch_runs_in(p.launches[l].rule.when, false));
    }
    // The suffix takes the decode launch's arguments, then kv_start, the prefix partials and
    // the prefix split count.
    EXPECT_EQ(p.launches[c.suffix].args.size(), p.launches[c.decode].args.size() + 4);
  }
}

TEST(CascadeLowering, EveryDecodeAttentionHasItsCascadeForms) {
  absl::StatusOr<CompiledPlan> built = tiny_plan();
  ASSERT_TRUE(built.ok()) << built.status();
  const Plan& plan = built->plan;
  expect_cascades(plan);

  // The launches evaluate under a cascade step's symbols, and the suffix merges exactly the
  // splits the prefix launch writes.
  const PlanCascade& c = plan.cascades.front();
  const LaunchSymbols step = {{"T", 5},    {"S", 5},  {"P", 100},  {"K", 700},
                              {"NP", 200}, {"CM", 4}, {"CL", 640}, {"CK", 60}};
  absl::StatusOr<LaunchGeometry> prefix = eval_launch_rule(plan.launches[c.prefix].rule, step);
  absl::StatusOr<LaunchGeometry> suffix = eval_launch_rule(plan.launches[c.suffix].rule, step);
  ASSERT_TRUE(prefix.ok()) << prefix.status();
  ASSERT_TRUE(suffix.ok()) << suffix.status();
  EXPECT_EQ(suffix->grid[0], 5);  // every sequence: non-members attend to their whole range
  const LaunchArg& splits = plan.launches[c.suffix].args.back();
  ASSERT_EQ(splits.kind, LaunchArg::Kind::kInt);
  absl::StatusOr<int64_t> n = eval_launch_expr(splits.expr, step);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, prefix->grid[2]);

  // Through a plan file, and listed by `kiln inspect`.
  const std::string path = testing::unique_temp_path("cascade.kplan");
  ASSERT_TRUE(write_plan(path, plan, built->blobs).ok());
  absl::StatusOr<LoadedPlan> loaded = read_plan(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->plan.cascades, plan.cascades);
  for (const PlanCascade& k : plan.cascades) {
    EXPECT_EQ(loaded->plan.launches[k.prefix].rule.when, StepKind::kCascade);
  }
  const std::string summary = plan_summary(*loaded);
  EXPECT_NE(summary.find(absl::StrCat("cascade: ", plan.cascades.size(), " decode attentions")),
            std::string::npos)
      << summary;
  EXPECT_NE(summary.find("cascade_prefix_"), std::string::npos) << summary;
}

TEST(CascadeLowering, PersistentPlanKeepsItsCascadeIndices) {
  absl::StatusOr<CompiledPlan> built = tiny_plan(DType::kBF16, /*persistent=*/true);
  ASSERT_TRUE(built.ok()) << built.status();
  ASSERT_TRUE(built->plan.persistent.has_value());
  expect_cascades(built->plan);
  // The cascade forms are no stages of the persistent kernel.
  for (int s : built->plan.persistent->stages) {
    EXPECT_NE(kernel_of(built->plan, s).family, KernelFamily::kCascadePrefix);
    EXPECT_NE(kernel_of(built->plan, s).family, KernelFamily::kCascadeSuffix);
  }
  const std::string path = testing::unique_temp_path("cascade-persistent.kplan");
  ASSERT_TRUE(write_plan(path, built->plan, built->blobs).ok());
  absl::StatusOr<LoadedPlan> loaded = read_plan(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
}

TEST(CascadeLowering, Fp8CachesHaveNone) {
  absl::StatusOr<CompiledPlan> built = tiny_plan(DType::kFP8E4M3);
  ASSERT_TRUE(built.ok()) << built.status();
  EXPECT_TRUE(built->plan.cascades.empty());
  for (const PlanKernel& k : built->plan.kernels) {
    EXPECT_NE(k.family, KernelFamily::kCascadePrefix) << k.key;
    EXPECT_NE(k.family, KernelFamily::kCascadeSuffix) << k.key;
  }
}

TEST(CascadeLowering, PrefixSplitExpressionIsTheKernelsPolicy) {
  for (int64_t group : {1, 4, 8}) {
    absl::StatusOr<std::shared_ptr<CascadePrefixSpec>> spec =
        make_cascade_prefix_spec(DType::kBF16, KvCacheKind::kSameAsRows, 128, group);
    ASSERT_TRUE(spec.ok()) << spec.status();
    for (int64_t kv_heads : {1, 8}) {
      const std::string e = cascade_prefix_split_expr(**spec, kv_heads);
      for (int64_t members : {1, 2, 7, 16, 64, 256}) {
        for (int64_t prefix : {1, 256, 513, 1024, 8192, 32768, 100000}) {
          absl::StatusOr<int64_t> v = eval_launch_expr(e, {{"CM", members}, {"CL", prefix}});
          ASSERT_TRUE(v.ok()) << v.status();
          EXPECT_EQ(*v, cascade_prefix_splits(**spec, members * group, kv_heads, prefix))
              << e << " at CM " << members << ", CL " << prefix;
        }
      }
    }
  }
}

TEST(CascadePlanFile, ACascadeOfTheWrongLaunchesIsRefused) {
  absl::StatusOr<CompiledPlan> built = tiny_plan();
  ASSERT_TRUE(built.ok()) << built.status();
  Plan plan = built->plan;
  ASSERT_FALSE(plan.cascades.empty());
  std::swap(plan.cascades[0].prefix, plan.cascades[0].suffix);
  const std::string path = testing::unique_temp_path("cascade-bad.kplan");
  ASSERT_TRUE(write_plan(path, plan, built->blobs).ok());
  absl::StatusOr<LoadedPlan> loaded = read_plan(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("manifest.cascades[0].prefix"), std::string::npos)
      << loaded.status();
  // Two cascades naming one launch.
  plan = built->plan;
  ASSERT_GE(plan.cascades.size(), 2u);
  plan.cascades[1].decode = plan.cascades[0].decode;
  ASSERT_TRUE(write_plan(path, plan, built->blobs).ok());
  loaded = read_plan(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("manifest.cascades[1].decode"), std::string::npos)
      << loaded.status();
}

}  // namespace
}  // namespace kiln
