// Launch binding: every argument kind against every parameter type, in entry order, with errors
// naming the kernel and parameter; step-kind selection.
#include "plan/launch_binding.h"

#include <gtest/gtest.h>

#include <map>

namespace kiln {
namespace {

class MapResolver : public LaunchResolver {
 public:
  absl::StatusOr<uint64_t> tensor(const std::string& v) override {
    auto it = tensors.find(v);
    if (it == tensors.end()) return absl::NotFoundError("no buffer for " + v);
    return it->second;
  }
  absl::StatusOr<uint64_t> workspace(const std::string& w) override {
    return w == "ws" ? 0x3000 : absl::StatusOr<uint64_t>(absl::NotFoundError("no workspace " + w));
  }
  absl::StatusOr<uint64_t> runtime(RuntimeInput r) override {
    return 0x4000 + static_cast<uint64_t>(r);
  }
  std::map<std::string, uint64_t> tensors = {{"%1", 0x1000}, {"@w", 0x2000}};
};

PlanKernel kernel() {
  return {.key = "k",
          .family = KernelFamily::kRmsNorm,
          .params = {{"y", ParamType::kPointer},
                     {"w", ParamType::kPointer},
                     {"ws", ParamType::kPointer},
                     {"top_p", ParamType::kPointer},
                     {"rows", ParamType::kI32},
                     {"n", ParamType::kI64},
                     {"eps", ParamType::kF32}}};
}

PlanLaunch launch() {
  PlanLaunch l;
  l.args = {LaunchArg::tensor("%1"),    LaunchArg::tensor("@w"),
            LaunchArg::workspace("ws"), LaunchArg::runtime_input(RuntimeInput::kTopP),
            LaunchArg::integer("T*3"),  LaunchArg::integer("T*1000000000"),
            LaunchArg::floating(1e-5)};
  return l;
}

TEST(LaunchBinding, BindsEveryKindInEntryOrder) {
  MapResolver r;
  absl::StatusOr<std::vector<BoundArg>> b = bind_launch(kernel(), launch(), {{"T", 7}}, r);
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(b->size(), 7u);
  EXPECT_EQ((*b)[0].pointer, 0x1000u);
  EXPECT_EQ((*b)[1].pointer, 0x2000u);
  EXPECT_EQ((*b)[2].pointer, 0x3000u);
  EXPECT_EQ((*b)[3].pointer, 0x4000u + static_cast<uint64_t>(RuntimeInput::kTopP));
  EXPECT_EQ((*b)[4].type, ParamType::kI32);
  EXPECT_EQ((*b)[4].integer, 21);
  EXPECT_EQ((*b)[5].integer, 7000000000);
  EXPECT_EQ((*b)[6].type, ParamType::kF32);
  EXPECT_FLOAT_EQ((*b)[6].real, 1e-5f);
}

std::string bind_error(PlanKernel k, PlanLaunch l, const LaunchSymbols& symbols = {{"T", 7}}) {
  MapResolver r;
  absl::StatusOr<std::vector<BoundArg>> b = bind_launch(k, l, symbols, r);
  return b.ok() ? "ok" : std::string(b.status().message());
}

TEST(LaunchBinding, ErrorsNameKernelAndParameter) {
  PlanLaunch l = launch();
  l.args.pop_back();
  EXPECT_EQ(bind_error(kernel(), l), "k: the launch passes 6 arguments, the entry takes 7");
  l = launch();
  l.args[6] = LaunchArg::integer("1");
  EXPECT_EQ(bind_error(kernel(), l), "k: parameter eps (f32) is bound to an argument of kind int");
  l = launch();
  l.args[0] = LaunchArg::floating(1);
  EXPECT_EQ(bind_error(kernel(), l), "k: parameter y (ptr) is bound to an argument of kind float");
  l = launch();
  l.args[1] = LaunchArg::tensor("%nope");
  EXPECT_EQ(bind_error(kernel(), l), "k: parameter w: no buffer for %nope");
  l = launch();
  l.args[4] = LaunchArg::integer("T*1000000000");  // 7e9 does not fit an i32
  EXPECT_NE(bind_error(kernel(), l)
                .find("k: parameter rows: \"T*1000000000\" = 7000000000 does "
                      "not fit an int"),
            std::string::npos);
  EXPECT_NE(bind_error(kernel(), launch(), {}).find("unbound symbol T"), std::string::npos);
}

TEST(LaunchBinding, StepKinds) {
  EXPECT_TRUE(launch_runs_in(StepKind::kAlways, true));
  EXPECT_TRUE(launch_runs_in(StepKind::kAlways, false));
  EXPECT_TRUE(launch_runs_in(StepKind::kPrefill, true));
  EXPECT_FALSE(launch_runs_in(StepKind::kPrefill, false));
  EXPECT_TRUE(launch_runs_in(StepKind::kDecode, false));
  EXPECT_FALSE(launch_runs_in(StepKind::kDecode, true));
  // Cascade launches run only where a runtime chooses a cascade step (PlanCascade).
  EXPECT_FALSE(launch_runs_in(StepKind::kCascade, true));
  EXPECT_FALSE(launch_runs_in(StepKind::kCascade, false));
}

TEST(LaunchBinding, StepBoundsSplitTheStepsBetweenTwoLowerings) {
  const StepBound gemv{"T", 0, 16}, gemm{"T", 17, 0};
  for (int64_t t = 1; t <= 64; ++t) {
    EXPECT_NE(bound_admits(gemv, t), bound_admits(gemm, t)) << "T=" << t;  // exactly one runs
  }
  EXPECT_TRUE(bound_admits(gemv, 16));
  EXPECT_FALSE(bound_admits(gemv, 17));
  EXPECT_TRUE(bound_admits(gemm, 17));
  EXPECT_FALSE(bound_admits(gemm, 16));
  EXPECT_TRUE(bound_admits(StepBound{}, 1 << 20));  // no bound
  EXPECT_FALSE(bound_admits(StepBound{"S", 4, 8}, 3));
  EXPECT_FALSE(bound_admits(StepBound{"S", 4, 8}, 9));
}

}  // namespace
}  // namespace kiln
