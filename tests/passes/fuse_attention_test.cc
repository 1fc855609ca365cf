// fuse-attention: IR text in -> text out (GQA, with and without a scale); "does not fuse" cases.
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

constexpr char kHeader[] = R"(graph @g {
  symbol T <= 16
  symbol S <= 4
  symbol P <= 8
  symbol NP <= 32
  symbol K <= 64
  input %positions : i32[T]
  input %slot_mapping : i32[T]
  input %qo_indptr : i32[S+1]
  input %kv_page_indptr : i32[S+1]
  input %kv_page_indices : i32[P]
  input %kv_last_page_len : i32[S]
  input %k_cache : f32[NP,16,2,8]
  input %v_cache : f32[NP,16,2,8]
  input %q : f32[T,4,8]
  input %k : f32[T,2,8]
  input %v : f32[T,2,8]
)";

// Grouped-query attention (4 query heads over 2 KV heads) in primitive ops.
constexpr char kBody[] = R"(  %kc = kv_write(%k_cache, %k, %slot_mapping) : f32[NP,16,2,8]
  %vc = kv_write(%v_cache, %v, %slot_mapping) : f32[NP,16,2,8]
  %s = paged_qk(%q, %kc, %qo_indptr, %kv_page_indptr, %kv_page_indices, %kv_last_page_len) {kv_dim = "K"} : f32[T,4,K]
  %scale = constant() {dtype = f32, value = 0.35355339059327373} : f32[]
  %ss = mul(%s, %scale) : f32[T,4,K]
  %m = $MASK
  %mx = reduce_max(%m) : f32[T,4,1]
  %d = sub(%m, %mx) : f32[T,4,K]
  %e = exp(%d) : f32[T,4,K]
  %z = reduce_sum(%e) : f32[T,4,1]
  %p = div(%e, %z) : f32[T,4,K]
  %o = paged_pv(%p, %vc, %qo_indptr, %kv_page_indptr, %kv_page_indices, %kv_last_page_len) : f32[T,4,8]
  output o = %o
$OUTPUTS}
)";

std::string attention(const std::string& outputs = "",
                      const std::string& mask = "causal_mask(%ss, %positions) : f32[T,4,K]") {
  return absl::StrCat(kHeader,
                      absl::StrReplaceAll(kBody, {{"$MASK", mask}, {"$OUTPUTS", outputs}}));
}

TEST(FuseAttention, GqaAttentionBecomesFlashAttention) {
  auto run = run_passes(attention(), {"fuse-attention"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(
      run->text,
      canonical(absl::StrCat(
          kHeader,
          R"(  %0, %1, %2 = flash_attention(%q, %k, %v, %k_cache, %v_cache, %positions, %slot_mapping, %qo_indptr, %kv_page_indptr, %kv_page_indices, %kv_last_page_len) {scale = 0.35355339059327373} : f32[T,4,8], f32[NP,16,2,8], f32[NP,16,2,8]
  output o = %0
})")));
  EXPECT_EQ(testing::stat(run->context, "fuse-attention", "fused"), 1);
  // No [T, H, K] scores buffer is left.
  EXPECT_THAT(run->text, ::testing::Not(HasSubstr("K]")));
}

TEST(FuseAttention, DoesNotFuseANonCausalAttention) {
  // The mask is replaced by an identity-shaped op: scores go straight into the softmax.
  const std::string in = attention("", "mul(%ss, %scale) : f32[T,4,K]");
  auto run = run_passes(in, {"fuse-attention"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(in));
  EXPECT_THAT(reasons(run->context, "fuse-attention"), HasSubstr("not causally masked"));
}

TEST(FuseAttention, DoesNotFuseWhenTheProbabilitiesHaveASecondUser) {
  const std::string in = attention("  output probs = %p\n");
  auto run = run_passes(in, {"fuse-attention"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(in));
  EXPECT_THAT(reasons(run->context, "fuse-attention"),
              HasSubstr("probabilities are not used only by paged_pv"));
}

TEST(FuseAttention, DoesNotFuseWhenTheScoresHaveASecondUser) {
  const std::string in = attention("  output scores = %s\n");
  auto run = run_passes(in, {"fuse-attention"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(in));
  EXPECT_THAT(reasons(run->context, "fuse-attention"), HasSubstr("more than one user"));
}

TEST(FuseAttention, DoesNotFuseWhenTheKCacheIsNotWrittenInTheStep) {
  std::string in = attention();
  in = absl::StrReplaceAll(in, {{"paged_qk(%q, %kc,", "paged_qk(%q, %k_cache,"}});
  auto run = run_passes(in, {"fuse-attention"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(in));
  EXPECT_THAT(reasons(run->context, "fuse-attention"), HasSubstr("K cache not written"));
}

}  // namespace
}  // namespace kiln
