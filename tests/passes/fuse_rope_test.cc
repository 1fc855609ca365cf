// fuse-rope: IR text in -> text out for both layouts and llama3 scaling; "does not fuse" cases.
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

// q: [T, 2 heads, 8] rotated with cos/sin tables; $LAYOUT and $EXTRA attributes are substituted.
constexpr char kHalf[] = R"(graph @g {
  symbol T <= 16
  input %positions : i32[T]
  input %x : f32[T,2,8]
  %cos_t = rope_table() {layout = "$COSLAYOUT", max_positions = 64, part = "cos", rotary_dim = 8, theta = 10000.0} : f32[64,8]
  %cos_r = gather(%cos_t, %positions) : f32[T,8]
  %cos = reshape(%cos_r) {shape = [0, 1, 8]} : f32[T,1,8]
  %sin_t = rope_table() {layout = "$SINLAYOUT", max_positions = 64, part = "sin", rotary_dim = 8, theta = 10000.0} : f32[64,8]
  %sin_r = gather(%sin_t, %positions) : f32[T,8]
  %sin = reshape(%sin_r) {shape = [0, 1, 8]} : f32[T,1,8]
  %lo = slice(%x) {axis = -1, end = 4, start = 0} : f32[T,2,4]
  %hi = slice(%x) {axis = 2, end = 8, start = 4} : f32[T,2,4]
  %nhi = neg(%hi) : f32[T,2,4]
  %rot = concat(%nhi, %lo) {axis = -1} : f32[T,2,8]
  %xc = mul(%x, %cos) : f32[T,2,8]
  %rs = mul(%sin, %rot) : f32[T,2,8]
  %y = add(%rs, %xc) : f32[T,2,8]
  output y = %y
$OUTPUTS}
)";

std::string half(const std::string& cos_layout = "half", const std::string& sin_layout = "half",
                 const std::string& outputs = "") {
  return absl::StrReplaceAll(
      kHalf, {{"$COSLAYOUT", cos_layout}, {"$SINLAYOUT", sin_layout}, {"$OUTPUTS", outputs}});
}

TEST(FuseRope, HalfLayout) {
  auto run = run_passes(half(), {"fuse-rope"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(R"(graph @g {
  symbol T <= 16
  input %positions : i32[T]
  input %x : f32[T,2,8]
  %0 = rope(%x, %positions) {layout = "half", rotary_dim = 8, theta = 10000.0} : f32[T,2,8]
  output y = %0
})"));
  EXPECT_EQ(testing::stat(run->context, "fuse-rope", "fused"), 1);
}

TEST(FuseRope, InterleavedLayoutWithLlama3ScalingInBf16) {
  constexpr char kIn[] = R"(graph @g {
  symbol T <= 16
  input %positions : i32[T]
  input %x : bf16[T,2,8]
  %cos_t = rope_table() {layout = "interleaved", max_positions = 64, part = "cos", rotary_dim = 8, scaling = "llama3", scaling_factor = 8.0, scaling_high_freq_factor = 4.0, scaling_low_freq_factor = 1.0, scaling_original_max_positions = 32, theta = 500000.0} : f32[64,8]
  %cos_r = gather(%cos_t, %positions) : f32[T,8]
  %cos_c = cast(%cos_r) {dtype = bf16} : bf16[T,8]
  %cos = reshape(%cos_c) {shape = [0, 1, 8]} : bf16[T,1,8]
  %sin_t = rope_table() {layout = "interleaved", max_positions = 64, part = "sin", rotary_dim = 8, scaling = "llama3", scaling_factor = 8.0, scaling_high_freq_factor = 4.0, scaling_low_freq_factor = 1.0, scaling_original_max_positions = 32, theta = 500000.0} : f32[64,8]
  %sin_r = gather(%sin_t, %positions) : f32[T,8]
  %sin_c = cast(%sin_r) {dtype = bf16} : bf16[T,8]
  %sin = reshape(%sin_c) {shape = [0, 1, 8]} : bf16[T,1,8]
  %pairs = reshape(%x) {shape = [0, 0, 4, 2]} : bf16[T,2,4,2]
  %even = slice(%pairs) {axis = -1, end = 1, start = 0} : bf16[T,2,4,1]
  %odd = slice(%pairs) {axis = 3, end = 2, start = 1} : bf16[T,2,4,1]
  %nodd = neg(%odd) : bf16[T,2,4,1]
  %cat = concat(%nodd, %even) {axis = -1} : bf16[T,2,4,2]
  %rot = reshape(%cat) {shape = [0, 0, 8]} : bf16[T,2,8]
  %xc = mul(%x, %cos) : bf16[T,2,8]
  %rs = mul(%rot, %sin) : bf16[T,2,8]
  %y = add(%xc, %rs) : bf16[T,2,8]
  output y = %y
})";
  auto run = run_passes(kIn, {"fuse-rope"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(R"(graph @g {
  symbol T <= 16
  input %positions : i32[T]
  input %x : bf16[T,2,8]
  %0 = rope(%x, %positions) {layout = "interleaved", rotary_dim = 8, scaling = "llama3", scaling_factor = 8.0, scaling_high_freq_factor = 4.0, scaling_low_freq_factor = 1.0, scaling_original_max_positions = 32, theta = 500000.0} : bf16[T,2,8]
  output y = %0
})"));
}

TEST(FuseRope, DoesNotFuseWhenARotationIntermediateHasASecondUser) {
  const std::string in = half("half", "half", "  output lo = %lo\n");
  auto run = run_passes(in, {"fuse-rope"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(in));
  EXPECT_THAT(reasons(run->context, "fuse-rope"), HasSubstr("rotation has another user"));
}

TEST(FuseRope, DoesNotFuseWhenTheTablesLayoutDiffersFromTheRotation) {
  const std::string in = half("interleaved", "interleaved");
  auto run = run_passes(in, {"fuse-rope"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(in));
  EXPECT_THAT(reasons(run->context, "fuse-rope"),
              HasSubstr("tables are for layout \"interleaved\" but the rotation is \"half\""));
}

TEST(FuseRope, DoesNotFuseWhenCosAndSinTablesDiffer) {
  const std::string in = half("half", "interleaved");
  auto run = run_passes(in, {"fuse-rope"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(in));
  EXPECT_THAT(reasons(run->context, "fuse-rope"),
              HasSubstr("cos and sin tables have different attributes"));
}

TEST(FuseRope, DoesNotFuseAConcatThatIsNotARotation) {
  const std::string in = R"(graph @g {
  symbol T <= 16
  input %x : f32[T,2,8]
  %lo = slice(%x) {axis = -1, end = 4, start = 0} : f32[T,2,4]
  %hi = slice(%x) {axis = -1, end = 8, start = 4} : f32[T,2,4]
  %cat = concat(%hi, %lo) {axis = -1} : f32[T,2,8]
  output y = %cat
})";
  auto run = run_passes(in, {"fuse-rope"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(in));
  EXPECT_THAT(reasons(run->context, "fuse-rope"), HasSubstr("concat is not a rotation"));
}

}  // namespace
}  // namespace kiln
