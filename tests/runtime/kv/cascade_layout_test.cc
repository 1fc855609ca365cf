// CascadeLayout: shared-prefix detection over page lists made by the page tables (fork and
// copy-on-write) and by hand (a prefix ending mid-page, an empty suffix), and over random
// prefix/suffix splits checked against the split that made them.
#include "runtime/kv/cascade_layout.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "tests/runtime/kv/cascade_steps.h"

namespace kiln {
namespace {

using testing::decode_step;

constexpr CascadeOptions kAny = {.min_sequences = 2, .min_prefix_tokens = 1};

TEST(CascadeLayout, ForkedSequencesShareTheirFullPages) {
  KvPageTables tables = *KvPageTables::create({/*page_size=*/4, /*num_pages=*/32});
  const SeqId parent = tables.add_sequence();
  ASSERT_TRUE(tables.reserve(parent, 10).ok());  // pages 0, 1 full; page 2 holds 2 tokens
  std::vector<StepSequence> step = {{parent, 1}};
  for (int i = 0; i < 3; ++i) step.push_back({*tables.fork(parent), 1});
  absl::StatusOr<StepMetadata> m = build_step_metadata(tables, step);
  ASSERT_TRUE(m.ok()) << m.status();
  std::optional<CascadeLayout> layout = find_shared_prefix(*m, 4, kAny);
  ASSERT_TRUE(layout.has_value());
  // Appending copied the partly filled page for all but one owner, so exactly the two full pages
  // are shared by all four.
  EXPECT_EQ(layout->prefix_len, 8);
  EXPECT_EQ(layout->prefix_pages, std::vector<int32_t>((*tables.page_table(parent)).begin(),
                                                       (*tables.page_table(parent)).begin() + 2));
  EXPECT_EQ(layout->prefix_seqs, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(layout->kv_start, (std::vector<int32_t>{8, 8, 8, 8}));
  EXPECT_TRUE(check_cascade_layout(*layout, *m, 4).ok());
}

TEST(CascadeLayout, PrefixEndingMidPageWithAnEmptySuffix) {
  // Sequence 1 holds 7 tokens, all in pages it shares with sequence 0 (10 tokens): the prefix is
  // those 7 tokens, ending inside page 6, and sequence 1's suffix is empty; sequence 0's suffix
  // starts at offset 3 of page 6.
  StepMetadata m = decode_step({{5, 6, 7}, {5, 6}}, {10, 7}, 4);
  std::optional<CascadeLayout> layout = find_shared_prefix(m, 4, kAny);
  ASSERT_TRUE(layout.has_value());
  EXPECT_EQ(layout->prefix_len, 7);
  EXPECT_EQ(layout->prefix_pages, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(layout->kv_start, (std::vector<int32_t>{7, 7}));
  EXPECT_TRUE(check_cascade_layout(*layout, m, 4).ok());
}

TEST(CascadeLayout, NoSharingNoPrefillAndThresholdsGivePlainAttention) {
  EXPECT_FALSE(find_shared_prefix(decode_step({{0, 1}, {2, 3}}, {8, 8}, 4), 4, kAny));
  EXPECT_FALSE(find_shared_prefix(decode_step({{0, 1}}, {8}, 4), 4, kAny));  // one sequence
  StepMetadata shared = decode_step({{0, 1, 2}, {0, 1, 3}}, {12, 12}, 4);
  ASSERT_TRUE(find_shared_prefix(shared, 4, kAny));
  EXPECT_FALSE(find_shared_prefix(shared, 4, {.min_sequences = 2, .min_prefix_tokens = 9}));
  EXPECT_FALSE(find_shared_prefix(shared, 4, {.min_sequences = 3, .min_prefix_tokens = 1}));
  // The same page lists in a prefill step (sequence 1 has two query tokens).
  StepMetadata prefill = shared;
  prefill.qo_indptr = {0, 1, 3};
  prefill.positions = {11, 10, 11};
  EXPECT_FALSE(find_shared_prefix(prefill, 4, kAny));
}

TEST(CascadeLayout, PartialSharingTakesTheGroupThatSavesMost) {
  // Sequences 0, 2, 4 share 3 pages; 1 and 3 share 1 page with each other; 5 shares nothing.
  // Sequence 2 shares only 2 pages with 0 and 4: {0, 4} x 12 tokens saves 12 reads, {0, 2, 4} x
  // 8 saves 16, so the three-member prefix of 8 wins.
  StepMetadata m =
      decode_step({{0, 1, 2, 10}, {3, 11}, {0, 1, 12}, {3, 13}, {0, 1, 2, 14}, {4, 15}},
                  {16, 6, 10, 7, 13, 8}, 4);
  std::optional<CascadeLayout> layout = find_shared_prefix(m, 4, kAny);
  ASSERT_TRUE(layout.has_value());
  EXPECT_EQ(layout->prefix_len, 8);
  EXPECT_EQ(layout->prefix_seqs, (std::vector<int32_t>{0, 2, 4}));
  EXPECT_EQ(layout->kv_start, (std::vector<int32_t>{8, 0, 8, 0, 8, 0}));
  EXPECT_TRUE(check_cascade_layout(*layout, m, 4).ok());
}

TEST(CascadeLayout, RandomPrefixSuffixSplits) {
  std::mt19937 rng(20261208);
  for (int trial = 0; trial < 300; ++trial) {
    const int32_t ps = std::vector<int32_t>{1, 3, 16, 64}[rng() % 4];
    const int32_t seqs = 2 + static_cast<int32_t>(rng() % 9);
    const int32_t members = 2 + static_cast<int32_t>(rng() % (seqs - 1));
    const int32_t shared_pages = 1 + static_cast<int32_t>(rng() % 6);
    testing::SharedStep step =
        testing::random_shared_step(rng, ps, seqs, members, shared_pages, /*max_suffix_pages=*/3);
    const StepMetadata& m = step.metadata;
    std::optional<CascadeLayout> layout = find_shared_prefix(m, ps, kAny);
    ASSERT_TRUE(layout.has_value()) << "trial " << trial;
    ASSERT_TRUE(check_cascade_layout(*layout, m, ps).ok()) << check_cascade_layout(*layout, m, ps);
    // Taking every member at the shared length is one candidate; dropping members that end
    // early may let the rest share more. The chosen split saves at least as much as the made one,
    // and at the made length it is the made split.
    const int64_t made = static_cast<int64_t>(members - 1) * step.shared_len;
    const int64_t chosen = static_cast<int64_t>(layout->num_members() - 1) * layout->prefix_len;
    EXPECT_GE(chosen, made) << "trial " << trial;
    if (layout->prefix_len == step.shared_len) {
      EXPECT_EQ(layout->prefix_seqs, step.member_seqs) << "trial " << trial;
    }
  }
}

TEST(CascadeLayout, CheckNamesTheViolation) {
  StepMetadata m = decode_step({{0, 1, 2}, {0, 1, 3}, {4}}, {12, 11, 2}, 4);
  CascadeLayout good = *find_shared_prefix(m, 4, kAny);
  EXPECT_TRUE(check_cascade_layout(good, m, 4).ok());
  CascadeLayout wrong_page = good;
  wrong_page.prefix_pages[1] = 3;
  EXPECT_NE(check_cascade_layout(wrong_page, m, 4).message().find("not the prefix's page"),
            std::string::npos);
  CascadeLayout too_long = good;
  too_long.prefix_len = 12;
  too_long.prefix_pages = {0, 1, 2};
  too_long.kv_start = {12, 12, 0};
  EXPECT_FALSE(check_cascade_layout(too_long, m, 4).ok());
  CascadeLayout stray = good;
  stray.kv_start[2] = 8;
  EXPECT_NE(check_cascade_layout(stray, m, 4).message().find("kv_start[2]"), std::string::npos);
}

}  // namespace
}  // namespace kiln
