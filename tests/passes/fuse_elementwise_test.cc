// fuse-elementwise: IR text in -> text out (SwiGLU, casts, literals, a shared intermediate);
// adds left to gemm-epilogue and intermediates read outside the chain.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "ir/expr.h"
#include "tests/passes/pass_test_util.h"

namespace kiln {
namespace {

using testing::canonical;
using testing::run_passes;

TEST(FuseElementwise, SwiGluBecomesOneExpression) {
  auto run = run_passes(R"ir(graph @g {
  symbol T <= 16
  input %g : f32[T,32]
  input %u : f32[T,32]
  %s = silu(%g) : f32[T,32]
  %a = mul(%s, %u) : f32[T,32]
  output a = %a
})ir",
                        {"fuse-elementwise"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(R"ir(graph @g {
  symbol T <= 16
  input %g : f32[T,32]
  input %u : f32[T,32]
  %0 = fused_elementwise(%g, %u) {dtype = f32, expr = "mul(silu($0), $1)"
} : f32[T,32]
  output a = %0
})ir"));
}

TEST(FuseElementwise, CastsConstantsAndBroadcastsFoldIntoTheExpression) {
  auto run = run_passes(R"ir(graph @g {
  symbol T <= 16
  input %x : bf16[T,8]
  input %r : f32[T,1]
  %xf = cast(%x) {dtype = f32} : f32[T,8]
  %c = constant() {dtype = f32, value = 0.5} : f32[]
  %h = mul(%xf, %c) : f32[T,8]
  %e = exp(%r) : f32[T,1]
  %y = sub(%h, %e) : f32[T,8]
  %yb = cast(%y) {dtype = bf16} : bf16[T,8]
  output y = %yb
})ir",
                        {"fuse-elementwise"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(R"ir(graph @g {
  symbol T <= 16
  input %x : bf16[T,8]
  input %r : f32[T,1]
  %0 = fused_elementwise(%x, %r) {dtype = bf16, expr = "sub(mul($0, 0.5), exp($1))"
} : bf16[T,8]
  output y = %0
})ir"));
  auto expr = run->graph->nodes()[0]->attrs.get_string("expr");
  ASSERT_TRUE(expr.ok());
  EXPECT_TRUE(validate_expr(*expr, 2).ok()) << validate_expr(*expr, 2);
}

TEST(FuseElementwise, AnIntermediateReadOutsideTheChainEndsItsOwnGroup) {
  auto run = run_passes(R"ir(graph @g {
  symbol T <= 16
  input %x : f32[T,8]
  %e = exp(%x) : f32[T,8]
  %n = neg(%e) : f32[T,8]
  output n = %n
  output e = %e
})ir",
                        {"fuse-elementwise"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(R"ir(graph @g {
  symbol T <= 16
  input %x : f32[T,8]
  %0 = fused_elementwise(%x) {dtype = f32, expr = "exp($0)"
} : f32[T,8]
  %1 = fused_elementwise(%0) {dtype = f32, expr = "neg($0)"} : f32[T,8]
  output n = %1
  output e = %0
})ir"));
}

TEST(FuseElementwise, LeavesBiasAndResidualAddsOfAMatmulToGemmEpilogue) {
  constexpr char kIn[] = R"ir(graph @g {
  symbol T <= 16
  input %x : f32[T,8]
  param @w : f32[4,8]
  param @b : f32[4]
  %m = matmul(%x, @w) : f32[T,4]
  %y = add(%m, @b) : f32[T,4]
  output y = %y
})ir";
  auto run = run_passes(kIn, {"fuse-elementwise"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(kIn));
}

// A chain longer than an expression may nest (kMaxExprDepth) fuses into several expressions, each
// valid, instead of failing at the top and leaving the chain unfused; the pass stays linear.
TEST(FuseElementwise, LongChainsSplitAtTheNestingLimit) {
  constexpr int kChain = 1000;
  std::string ir = "graph @g {\n  symbol T <= 4\n  input %x : f32[T,8]\n";
  std::string prev = "%x";
  for (int i = 0; i < kChain; ++i) {
    absl::StrAppend(&ir, "  %n", i, " = neg(", prev, ") : f32[T,8]\n");
    prev = absl::StrCat("%n", i);
  }
  absl::StrAppend(&ir, "  output y = ", prev, "\n}\n");
  auto run = run_passes(ir, {"fuse-elementwise"});
  ASSERT_TRUE(run.ok()) << run.status();
  int fused = 0, negs = 0;
  for (const auto& n : run->graph->nodes()) {
    ASSERT_EQ(n->op, OpKind::kFusedElementwise);
    const std::string expr = *n->attrs.get_string("expr");
    EXPECT_TRUE(validate_expr(expr, 1).ok());
    for (size_t at = expr.find("neg("); at != std::string::npos; at = expr.find("neg(", at + 1))
      ++negs;
    ++fused;
  }
  EXPECT_EQ(negs, kChain);  // every op is in exactly one expression
  EXPECT_EQ(fused, (kChain + kMaxExprDepth - 1) / kMaxExprDepth);
}

// Squaring repeatedly doubles the expression text per step (a shared operand is written once per
// use); the group stops growing at a bounded size instead of hanging on an exponential string.
TEST(FuseElementwise, RepeatedSquaringStaysBounded) {
  std::string ir = "graph @g {\n  symbol T <= 4\n  input %x : f32[T,8]\n";
  std::string prev = "%x";
  for (int i = 0; i < 64; ++i) {
    absl::StrAppend(&ir, "  %s", i, " = mul(", prev, ", ", prev, ") : f32[T,8]\n");
    prev = absl::StrCat("%s", i);
  }
  absl::StrAppend(&ir, "  output y = ", prev, "\n}\n");
  auto run = run_passes(ir, {"fuse-elementwise"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_GT(run->graph->num_nodes(), 1);
  for (const auto& n : run->graph->nodes()) {
    ASSERT_EQ(n->op, OpKind::kFusedElementwise);
    EXPECT_LT(n->attrs.get_string("expr")->size(), 100000u);
  }
}

}  // namespace
}  // namespace kiln
