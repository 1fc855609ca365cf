// StepMetadata: CSR inputs of a mixed prefill + decode step, checked against values computed
// independently from the page tables; all-or-nothing failure across the step.
#include "runtime/kv/step_metadata.h"

#include <gtest/gtest.h>

#include <set>

namespace kiln {
namespace {

KvPageTablesConfig config(int32_t num_pages) { return {/*page_size=*/4, num_pages}; }

TEST(StepMetadata, MixedPrefillAndDecode) {
  KvPageTables cache = *KvPageTables::create(config(16));
  // The decode sequence already holds 6 tokens; its pages come first in the pool so the
  // prefills' pages are not simply 0, 1, 2, ...
  SeqId decode = cache.add_sequence();
  ASSERT_TRUE(cache.reserve(decode, 6).ok());
  SeqId a = cache.add_sequence();
  SeqId b = cache.add_sequence();

  std::vector<StepSequence> step = {{a, 5}, {b, 17}, {decode, 1}};
  auto m = build_step_metadata(cache, step);
  ASSERT_TRUE(m.ok()) << m.status();

  // By hand: a takes positions 0..4 (2 pages, last holds 1), b 0..16 (5 pages, last holds 1),
  // the decode position 6 (2 pages, last holds 3).
  std::vector<int32_t> positions;
  for (int32_t p = 0; p < 5; ++p) positions.push_back(p);
  for (int32_t p = 0; p < 17; ++p) positions.push_back(p);
  positions.push_back(6);
  EXPECT_EQ(m->positions, positions);
  EXPECT_EQ(m->qo_indptr, (std::vector<int32_t>{0, 5, 22, 23}));
  EXPECT_EQ(m->kv_page_indptr, (std::vector<int32_t>{0, 2, 7, 9}));
  EXPECT_EQ(m->kv_last_page_len, (std::vector<int32_t>{1, 1, 3}));
  EXPECT_EQ(m->max_kv_len, 17);
  EXPECT_EQ(m->num_tokens(), 23);
  EXPECT_EQ(m->num_sequences(), 3);
  EXPECT_EQ(*cache.length(a), 5);
  EXPECT_EQ(*cache.length(b), 17);
  EXPECT_EQ(*cache.length(decode), 7);

  // Slots recomputed from each sequence's page table; page lists equal the tables.
  std::set<int32_t> slots;
  for (int s = 0; s < 3; ++s) {
    auto table = *cache.page_table(step[s].seq);
    ASSERT_EQ(m->kv_page_indptr[s + 1] - m->kv_page_indptr[s], static_cast<int32_t>(table.size()));
    for (size_t i = 0; i < table.size(); ++i) {
      EXPECT_EQ(m->kv_page_indices[m->kv_page_indptr[s] + i], table[i]);
    }
    const int32_t kv_len = (static_cast<int32_t>(table.size()) - 1) * 4 + m->kv_last_page_len[s];
    EXPECT_EQ(kv_len, *cache.length(step[s].seq));
    for (int32_t t = m->qo_indptr[s]; t < m->qo_indptr[s + 1]; ++t) {
      const int32_t pos = m->positions[t];
      EXPECT_EQ(m->slot_mapping[t], table[pos / 4] * 4 + pos % 4) << "token " << t;
      EXPECT_TRUE(slots.insert(m->slot_mapping[t]).second) << "slot written twice";
    }
  }
  EXPECT_EQ(m->slot_mapping.size(), 23u);
  EXPECT_EQ(m->kv_page_indices.size(), 9u);
}

TEST(StepMetadata, ForkedDecodesWriteToDistinctSlots) {
  KvPageTables cache = *KvPageTables::create(config(8));
  SeqId a = cache.add_sequence();
  ASSERT_TRUE(cache.reserve(a, 3).ok());
  SeqId b = *cache.fork(a);
  std::vector<StepSequence> step = {{a, 1}, {b, 1}};
  auto m = build_step_metadata(cache, step);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->positions, (std::vector<int32_t>{3, 3}));
  EXPECT_NE(m->slot_mapping[0], m->slot_mapping[1]);  // copy-on-write split the page
  EXPECT_EQ(cache.take_pending_copies().size(), 1u);
}

TEST(StepMetadata, StepThatDoesNotFitChangesNoSequence) {
  KvPageTables cache = *KvPageTables::create(config(4));
  SeqId a = cache.add_sequence();
  SeqId b = cache.add_sequence();
  ASSERT_TRUE(cache.reserve(a, 2).ok());
  std::vector<StepSequence> step = {{a, 1}, {b, 13}};  // a fits; b needs 4 pages, 3 free
  auto m = build_step_metadata(cache, step);
  ASSERT_EQ(m.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(m.status().message().find("KV cache is out of pages"), std::string::npos);
  EXPECT_EQ(*cache.length(a), 2);
  EXPECT_EQ(*cache.length(b), 0);
  EXPECT_EQ(cache.free_pages(), 3);
}

TEST(StepMetadata, RejectsBadSteps) {
  KvPageTables cache = *KvPageTables::create(config(4));
  SeqId a = cache.add_sequence();
  std::vector<StepSequence> step = {{a, 0}};
  EXPECT_EQ(build_step_metadata(cache, step).status().code(), absl::StatusCode::kInvalidArgument);
  step = {{a, 1}, {a, 1}};
  EXPECT_EQ(build_step_metadata(cache, step).status().code(), absl::StatusCode::kInvalidArgument);
  step = {{a + 100, 1}};
  EXPECT_EQ(build_step_metadata(cache, step).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*cache.length(a), 0);
  auto empty = build_step_metadata(cache, {});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->qo_indptr, std::vector<int32_t>{0});
  EXPECT_EQ(empty->num_sequences(), 0);
}

}  // namespace
}  // namespace kiln
