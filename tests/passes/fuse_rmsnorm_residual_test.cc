// fuse-rmsnorm-residual: IR text in -> text out with and without the residual add; "does not
// fuse" cases.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_replace.h"
#include "tests/passes/pass_test_util.h"

namespace kiln {
namespace {

using testing::canonical;
using ::testing::HasSubstr;
using testing::reasons;
using testing::run_passes;

// h = a + b; y = h * rsqrt(mean(h*h) + eps) * w; the residual sum h is read later too.
constexpr char kResidual[] = R"(graph @g {
  symbol T <= 16
  input %a : f32[T,8]
  input %b : f32[T,8]
  param @w : f32[8]
  %h = add(%a, %b) : f32[T,8]
  %sq = mul(%h, %h) : f32[T,8]
  %ms = reduce_mean(%sq) : f32[T,1]
$EPS
  %ae = add(%ms, %eps) : f32[T,1]
  %r = rsqrt(%ae) : f32[T,1]
  %n = mul(%h, %r) : f32[T,8]
  %y = mul(@w, %n) : f32[T,8]
  %later = add(%h, %y) : f32[T,8]
  output out = %later
$OUTPUTS}
)";

constexpr char kScalarEps[] = "  %eps = constant() {dtype = f32, value = 1e-06} : f32[]";
// A constant reshaped to [1]: the eps operand has the wrong shape for the fused op's attribute.
constexpr char kVectorEps[] = R"(  %eps0 = constant() {dtype = f32, value = 1e-06} : f32[]
  %eps = reshape(%eps0) {shape = [1]} : f32[1])";

std::string residual(const std::string& eps = kScalarEps, const std::string& outputs = "") {
  return absl::StrReplaceAll(kResidual, {{"$EPS", eps}, {"$OUTPUTS", outputs}});
}

TEST(FuseRmsNormResidual, ResidualAddAndNormBecomeOneOpWithTheSumAsSecondResult) {
  auto run = run_passes(residual(), {"fuse-rmsnorm-residual"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(R"(graph @g {
  symbol T <= 16
  input %a : f32[T,8]
  input %b : f32[T,8]
  param @w : f32[8]
  %0, %1 = rmsnorm_residual(%b, %a, @w) {eps = 1e-06} : f32[T,8], f32[T,8]
  %later = add(%1, %0) : f32[T,8]
  output out = %later
})"));
  EXPECT_EQ(testing::stat(run->context, "fuse-rmsnorm-residual", "rmsnorm_residual"), 1);
}

// The residual add of a GEMM's result (o_proj, down_proj) is left to gemm-epilogue: the GEMM
// writes the sum in its epilogue, and the norm becomes a plain rmsnorm of that sum.
TEST(FuseRmsNormResidual, AResidualAddOfAMatmulIsLeftToTheGemmEpilogue) {
  const std::string in = absl::StrReplaceAll(residual(), {{"  input %b : f32[T,8]\n",
                                                           "  input %x : f32[T,8]\n  param @p : f32[8,8]\n"},
                                                          {"  %h = add(%a, %b)",
                                                           "  %b = matmul(%x, @p) : f32[T,8]\n  %h = add(%a, %b)"}});
  auto run = run_passes(in, {"fuse-rmsnorm-residual"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(R"(graph @g {
  symbol T <= 16
  input %a : f32[T,8]
  input %x : f32[T,8]
  param @p : f32[8,8]
  param @w : f32[8]
  %b = matmul(%x, @p) : f32[T,8]
  %h = add(%a, %b) : f32[T,8]
  %0 = rmsnorm(%h, @w) {eps = 1e-06} : f32[T,8]
  %later = add(%h, %0) : f32[T,8]
  output out = %later
})"));
  // ... and gemm-epilogue then takes it.
  run = run_passes(in, {"fuse-rmsnorm-residual", "gemm-epilogue"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_THAT(run->text, HasSubstr("epilogue = \"residual\""));
  EXPECT_THAT(run->text, HasSubstr("= rmsnorm(%"));
}

TEST(FuseRmsNormResidual, NormWithoutResidualBecomesRmsNorm) {
  constexpr char kIn[] = R"(graph @g {
  symbol S <= 4
  input %x : bf16[S,8]
  param @w : bf16[8]
  %sq = mul(%x, %x) : bf16[S,8]
  %ms = reduce_mean(%sq) : bf16[S,1]
  %eps = constant() {dtype = bf16, value = 1e-05} : bf16[]
  %ae = add(%eps, %ms) : bf16[S,1]
  %r = rsqrt(%ae) : bf16[S,1]
  %n = mul(%r, %x) : bf16[S,8]
  %y = mul(%n, @w) : bf16[S,8]
  output y = %y
})";
  auto run = run_passes(kIn, {"fuse-rmsnorm-residual"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(R"(graph @g {
  symbol S <= 4
  input %x : bf16[S,8]
  param @w : bf16[8]
  %0 = rmsnorm(%x, @w) {eps = 1e-05} : bf16[S,8]
  output y = %0
})"));
}

TEST(FuseRmsNormResidual, DoesNotFuseWhenAnIntermediateHasASecondUser) {
  const std::string in = residual(kScalarEps, "  output inv_rms = %r\n");
  auto run = run_passes(in, {"fuse-rmsnorm-residual"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(in));
  EXPECT_THAT(reasons(run->context, "fuse-rmsnorm-residual"), HasSubstr("rsqrt"));
}

TEST(FuseRmsNormResidual, DoesNotFuseWithANonScalarEps) {
  const std::string in = residual(kVectorEps);
  auto run = run_passes(in, {"fuse-rmsnorm-residual"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(in));
  EXPECT_THAT(reasons(run->context, "fuse-rmsnorm-residual"),
              HasSubstr("eps constant has shape f32[1], not a scalar"));
}

TEST(FuseRmsNormResidual, DoesNotFuseWithAWeightOfAnotherDtype) {
  constexpr char kIn[] = R"(graph @g {
  symbol T <= 16
  input %x : f32[T,8]
  param @w : f32[T,8]
  %sq = mul(%x, %x) : f32[T,8]
  %ms = reduce_mean(%sq) : f32[T,1]
  %eps = constant() {dtype = f32, value = 1e-05} : f32[]
  %ae = add(%ms, %eps) : f32[T,1]
  %r = rsqrt(%ae) : f32[T,1]
  %n = mul(%x, %r) : f32[T,8]
  %y = mul(%n, @w) : f32[T,8]
  output y = %y
})";
  auto run = run_passes(kIn, {"fuse-rmsnorm-residual"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(kIn));
  EXPECT_THAT(reasons(run->context, "fuse-rmsnorm-residual"),
              HasSubstr("weight f32[T,8] is not f32[8]"));
}

}  // namespace
}  // namespace kiln
