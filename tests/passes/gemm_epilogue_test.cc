// gemm-epilogue: matmul [+ bias] [+ residual] -> gemm{epilogue}; adds with other readers stay.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/passes/pass_test_util.h"

namespace kiln {
namespace {

using testing::canonical;
using testing::run_passes;

constexpr char kHeader[] = R"(graph @g {
  symbol T <= 16
  input %x : f32[T,8]
  input %r : f32[T,4]
  param @w : f32[4,8]
  param @b : f32[4]
)";

TEST(GemmEpilogue, BiasThenResidual) {
  auto run = run_passes(absl::StrCat(kHeader, R"(  %m = matmul(%x, @w) : f32[T,4]
  %y = add(@b, %m) : f32[T,4]
  %z = add(%r, %y) : f32[T,4]
  output z = %z
})"),
                        {"gemm-epilogue"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text,
            canonical(absl::StrCat(
                kHeader, R"(  %0 = gemm(%x, @w, @b, %r) {epilogue = "bias_residual"} : f32[T,4]
  output z = %0
})")));
}

TEST(GemmEpilogue, ResidualOnlyAndPlainMatmul) {
  auto run = run_passes(absl::StrCat(kHeader, R"(  %m = matmul(%x, @w) : f32[T,4]
  %z = add(%m, %r) : f32[T,4]
  %m2 = matmul(%x, @w) : f32[T,4]
  output z = %z
  output m2 = %m2
})"),
                        {"gemm-epilogue"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(absl::StrCat(
                           kHeader, R"(  %0 = gemm(%x, @w, %r) {epilogue = "residual"} : f32[T,4]
  %1 = gemm(%x, @w) {epilogue = "none"} : f32[T,4]
  output z = %0
  output m2 = %1
})")));
  EXPECT_EQ(testing::stat(run->context, "gemm-epilogue", "residual"), 1);
  EXPECT_EQ(testing::stat(run->context, "gemm-epilogue", "none"), 1);
}

TEST(GemmEpilogue, DoesNotFoldAnAddWhenTheProductHasASecondReader) {
  auto run = run_passes(absl::StrCat(kHeader, R"(  %m = matmul(%x, @w) : f32[T,4]
  %y = add(%m, @b) : f32[T,4]
  output y = %y
  output m = %m
})"),
                        {"gemm-epilogue"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text,
            canonical(absl::StrCat(kHeader, R"(  %0 = gemm(%x, @w) {epilogue = "none"} : f32[T,4]
  %y = add(%0, @b) : f32[T,4]
  output y = %y
  output m = %0
})")));
}

}  // namespace
}  // namespace kiln
