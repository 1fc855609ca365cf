// Cascade attention on the reference backend: the shared prefix and each suffix as separate
// softmaxes merged by log-sum-exp equal plain paged attention (flash_attention) over random
// prefix/suffix splits, including empty suffixes, prefixes ending mid-page, members at random
// step positions beside sequences that share nothing, GQA, and an fp8e4m3 cache.
#include "runtime/reference/cascade_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "tests/runtime/kv/cascade_steps.h"

namespace kiln {
namespace {

struct Shape {
  int64_t hq, hkv, d;
};

// Runs both on one random step and returns max |cascade - plain| / max |plain|.
double compare(std::mt19937& rng, const testing::SharedStep& step, int32_t ps, const Shape& sh,
               bool fp8_scales) {
  const StepMetadata& m = step.metadata;
  std::optional<CascadeLayout> layout =
      find_shared_prefix(m, ps, {.min_sequences = 2, .min_prefix_tokens = 1});
  EXPECT_TRUE(layout.has_value());
  if (!layout) return 1e9;
  const int64_t S = m.num_sequences(), rows = int64_t{step.num_pages} * ps;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(S * sh.hq * sh.d), kc(rows * sh.hkv * sh.d), vc(kc.size());
  std::vector<float> ks(rows * sh.hkv), vs(rows * sh.hkv);
  for (float& x : q) x = normal(rng);
  for (float& x : kc) x = 2 * normal(rng);  // spread scores so the merge weights differ widely
  for (float& x : vc) x = normal(rng);
  for (float& x : ks) x = 0.5f + 0.01f * (rng() % 100);
  for (float& x : vs) x = 0.5f + 0.01f * (rng() % 100);
  const std::vector<int64_t> cache_shape = {step.num_pages, ps, sh.hkv, sh.d};
  KvCacheView k_cache{kc.data(), cache_shape, fp8_scales ? ks.data() : nullptr};
  KvCacheView v_cache{vc.data(), cache_shape, fp8_scales ? vs.data() : nullptr};
  auto iv = [](const std::vector<int32_t>& v) {
    return IView{v.data(), {static_cast<int64_t>(v.size())}};
  };
  absl::StatusOr<PagedBatch> batch =
      make_paged_batch(iv(m.qo_indptr), iv(m.kv_page_indptr), iv(m.kv_page_indices),
                       iv(m.kv_last_page_len), S, step.num_pages, ps);
  EXPECT_TRUE(batch.ok()) << batch.status();
  if (!batch.ok()) return 1e9;
  const double scale = 1.0 / std::sqrt(static_cast<double>(sh.d));
  const FView qv{q.data(), {S, sh.hq, sh.d}};
  std::vector<float> plain(q.size()), cascade(q.size(), NAN);
  // flash_attention writes this step's K/V rows first: slots -1 write nothing.
  std::vector<int32_t> no_slots(S, -1);
  std::vector<float> kv_rows(S * sh.hkv * sh.d, 0.0f);
  const FView rows_view{kv_rows.data(), {S, sh.hkv, sh.d}};
  EXPECT_TRUE(flash_attention(qv, rows_view, rows_view, k_cache, v_cache, iv(m.positions),
                              iv(no_slots), *batch, scale, plain.data(), nullptr)
                  .ok());
  EXPECT_TRUE(cascade_attention(qv, k_cache, v_cache, *batch, *layout, scale, cascade.data()).ok());
  double err = 0, mag = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    err = std::max(err, static_cast<double>(std::fabs(cascade[i] - plain[i])));
    mag = std::max(mag, static_cast<double>(std::fabs(plain[i])));
  }
  if (!(err == err)) return 1e9;  // NaN: some output never written
  return err / mag;
}

TEST(CascadeAttention, EqualsPlainPagedAttentionOverRandomSplits) {
  std::mt19937 rng(7);
  int trials = 0;
  for (int32_t ps : {1, 5, 16}) {
    for (Shape sh : {Shape{4, 4, 16}, Shape{8, 2, 32}, Shape{8, 1, 8}}) {
      for (int t = 0; t < 6; ++t) {
        const int32_t seqs = 2 + static_cast<int32_t>(rng() % 6);
        const int32_t members = 2 + static_cast<int32_t>(rng() % (seqs - 1));
        testing::SharedStep step =
            testing::random_shared_step(rng, ps, seqs, members, 1 + rng() % 5, 3, t == 0);
        const double rel = compare(rng, step, ps, sh, /*fp8_scales=*/t % 3 == 2);
        // fp32 on both sides, summed in different orders: a few ulps of the output's magnitude.
        EXPECT_LT(rel, 2e-6) << "page size " << ps << ", Hq " << sh.hq << ", Hkv " << sh.hkv
                             << ", D " << sh.d << ", trial " << t;
        ++trials;
      }
    }
  }
  EXPECT_EQ(trials, 54);
}

TEST(CascadeAttention, RejectsALayoutOfAnotherStep) {
  testing::SharedStep step;
  std::mt19937 rng(1);
  step = testing::random_shared_step(rng, 4, 3, 2, 2, 1);
  std::optional<CascadeLayout> layout = find_shared_prefix(step.metadata, 4, {2, 1});
  ASSERT_TRUE(layout.has_value());
  layout->kv_start.push_back(0);  // one sequence too many
  const StepMetadata& m = step.metadata;
  auto iv = [](const std::vector<int32_t>& v) {
    return IView{v.data(), {static_cast<int64_t>(v.size())}};
  };
  PagedBatch batch = *make_paged_batch(iv(m.qo_indptr), iv(m.kv_page_indptr), iv(m.kv_page_indices),
                                       iv(m.kv_last_page_len), 3, step.num_pages, 4);
  std::vector<float> q(3 * 2 * 8), cache(step.num_pages * 4 * 8), out(q.size());
  KvCacheView c{cache.data(), {step.num_pages, 4, 1, 8}, nullptr};
  EXPECT_FALSE(
      cascade_attention(FView{q.data(), {3, 2, 8}}, c, c, batch, *layout, 0.35, out.data()).ok());
}

}  // namespace
}  // namespace kiln
