// PassManager and registry: pipelines by name, unknown names, verification after each pass,
// IR printing and numbered dumps, statistics.
#include "passes/pass_manager.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ir/parser.h"
#include "ir/printer.h"
#include "passes/pass_registry.h"
#include "tests/passes/pass_test_util.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;

constexpr char kSwiGlu[] = R"(graph @g {
  symbol T <= 16
  input %g : f32[T,32]
  input %u : f32[T,32]
  %c1 = constant() {dtype = f32, value = 1.0} : f32[]
  %c2 = constant() {dtype = f32, value = 1.0} : f32[]
  %dead = mul(%g, %c2) : f32[T,32]
  %s = silu(%g) : f32[T,32]
  %a = mul(%s, %u) : f32[T,32]
  %b = mul(%a, %c1) : f32[T,32]
  output a = %b
})";

TEST(PassRegistry, DefaultPipelineNamesAreRegistered) {
  EXPECT_EQ(
      default_pipeline(),
      (std::vector<std::string>{"canonicalize", "shard-tensor-parallel", "fuse-horizontal",
                                "fuse-rope", "fuse-rmsnorm-residual", "fuse-attention",
                                "fuse-elementwise", "gemm-epilogue", "plan-memory", "plan-kv"}));
  for (const std::string& name : default_pipeline()) {
    auto pass = create_pass(name);
    ASSERT_TRUE(pass.ok()) << pass.status();
    EXPECT_EQ((*pass)->name(), name);
    EXPECT_FALSE((*pass)->description().empty());
  }
}

TEST(PassRegistry, UnknownPassNamesTheRegisteredOnes) {
  auto pm = PassManager::from_names({"canonicalize", "fuse-everything"});
  ASSERT_FALSE(pm.ok());
  EXPECT_THAT(pm.status().message(), HasSubstr("unknown pass \"fuse-everything\""));
  EXPECT_THAT(pm.status().message(), HasSubstr("fuse-attention"));
}

// A pass that breaks the IR: the manager's verifier must name it.
class BreakTypes : public Pass {
 public:
  std::string name() const override { return "test-break-types"; }
  std::string description() const override { return "sets a wrong result type"; }
  absl::StatusOr<bool> run(Graph& graph, PassContext&) override {
    graph.nodes().back()->output()->type.dtype = DType::kBF16;
    return true;
  }
};

TEST(PassManager, VerifiesAfterEachPassAndNamesTheCulprit) {
  auto g = parse_graph(kSwiGlu);
  ASSERT_TRUE(g.ok());
  PassManagerOptions options;
  options.verify_each = true;
  PassManager pm(options);
  pm.add(std::make_unique<BreakTypes>());
  PassContext context;
  absl::Status s = pm.run(**g, context);
  EXPECT_THAT(s.message(), HasSubstr("IR does not verify after test-break-types"));
}

TEST(PassManager, PrintsAndDumpsIrAndCollectsStatistics) {
  auto g = parse_graph(kSwiGlu);
  ASSERT_TRUE(g.ok());
  const std::string dir = ::testing::TempDir() + "/kiln_pm_dump";
  std::filesystem::remove_all(dir);
  std::ostringstream printed;
  PassManagerOptions options;
  options.print_ir_after = {"fuse-elementwise"};
  options.dump_ir_dir = dir;
  options.print_stream = &printed;
  auto pm = PassManager::from_names({"canonicalize", "fuse-elementwise"}, options);
  ASSERT_TRUE(pm.ok()) << pm.status();
  PassContext context;
  ASSERT_TRUE(pm->run(**g, context).ok());

  EXPECT_THAT(printed.str(), HasSubstr("// ----- IR after fuse-elementwise -----"));
  EXPECT_THAT(printed.str(), HasSubstr("expr = \"mul(mul(silu($0), $1), 1)\""));
  EXPECT_THAT(printed.str(), ::testing::Not(HasSubstr("IR after canonicalize")));
  for (const char* f : {"00-input.kir", "01-canonicalize.kir", "02-fuse-elementwise.kir"}) {
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + f)) << f;
  }
  // Dumps parse back (they are the editable IR); a pass's dump opens with its statistics, as
  // comments.
  std::ifstream in(dir + "/02-fuse-elementwise.kir");
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str().rfind("// fuse-elementwise (", 0), 0u) << text.str();
  EXPECT_THAT(text.str(), HasSubstr("\n//   fused: 1\n"));
  auto again = parse_graph(text.str());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(print_graph(**again), print_graph(**g));

  EXPECT_EQ(context.stats["canonicalize"]["merged"], 1);
  EXPECT_EQ(context.stats["canonicalize"]["removed"], 2);  // %dead, then %c2
  EXPECT_EQ(context.stats["fuse-elementwise"]["fused"], 1);
  ASSERT_EQ(pm->records().size(), 2u);
  EXPECT_TRUE(pm->records()[1].changed);
  const std::string report = pm->stats_report(context);
  EXPECT_THAT(report, HasSubstr("fuse-elementwise: fused 1, ops 3"));
  EXPECT_THAT(report, HasSubstr("canonicalize: merged 1, removed 2"));
}

}  // namespace
}  // namespace kiln
