// PrefixCache: full-page and sub-page hits share the cached pages (copy-on-write of a shared
// partly filled page), LRU eviction frees only pages no live sequence uses, hit statistics.
#include "runtime/kv/prefix_cache.h"

#include <gtest/gtest.h>

#include "tests/runtime/scheduler/fake_backend.h"

namespace kiln {
namespace {

using testing::fake_kv;

// A sequence of `tokens.size()` tokens with slots reserved (the "K/V" is not needed here).
SeqId filled(KvPageTables& kv, const std::vector<int32_t>& tokens) {
  SeqId s = kv.add_sequence();
  EXPECT_TRUE(kv.reserve(s, static_cast<int64_t>(tokens.size())).ok());
  return s;
}

std::vector<int32_t> pages_of(const KvPageTables& kv, SeqId s) {
  absl::Span<const int32_t> p = *kv.page_table(s);
  return {p.begin(), p.end()};
}

TEST(PrefixCache, FullPagesAndPartOfTheNextAreShared) {
  KvPageTables kv = fake_kv(16, 4);
  PrefixCache cache(kv);
  const std::vector<int32_t> t = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  SeqId a = filled(kv, t);
  ASSERT_TRUE(cache.insert(t, a, 10, /*include_partial_page=*/true).ok());
  EXPECT_EQ(cache.num_nodes(), 3);  // two full pages and a partial one
  const std::vector<int32_t> a_pages = pages_of(kv, a);
  ASSERT_TRUE(kv.free(a).ok());

  // The same prompt: everything but the last token is cached.
  absl::StatusOr<PrefixMatch> m = cache.acquire(t, 9);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->cached_tokens, 9);
  EXPECT_EQ(*kv.length(m->seq), 9);
  EXPECT_EQ(pages_of(kv, m->seq), a_pages);
  // A prompt that leaves the cached tokens inside the second page.
  std::vector<int32_t> u = {1, 2, 3, 4, 5, 6, 42, 43};
  absl::StatusOr<PrefixMatch> n = cache.acquire(u, 7);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->cached_tokens, 6);
  EXPECT_EQ(pages_of(kv, n->seq), std::vector<int32_t>(a_pages.begin(), a_pages.begin() + 2));
  // Appending into the shared partly filled page copies it first.
  ASSERT_TRUE(kv.reserve(n->seq, 2).ok());
  std::vector<PageCopy> copies = kv.take_pending_copies();
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].src, a_pages[1]);
  EXPECT_NE(pages_of(kv, n->seq)[1], a_pages[1]);
  EXPECT_EQ(pages_of(kv, n->seq)[0], a_pages[0]);
}

TEST(PrefixCache, APrefixShorterThanOnePageIsReused) {
  KvPageTables kv = fake_kv(8, 16);
  PrefixCache cache(kv);
  const std::vector<int32_t> system = {100, 101, 102, 103, 104};  // 5 tokens, page of 16
  std::vector<int32_t> first = system;
  first.insert(first.end(), {7, 8, 9});
  SeqId a = filled(kv, first);
  ASSERT_TRUE(cache.insert(first, a, 8, /*include_partial_page=*/false).ok());
  EXPECT_EQ(cache.num_nodes(), 0);  // nothing but a partial page to cache: not at prefill
  ASSERT_TRUE(cache.insert(first, a, 8, /*include_partial_page=*/true).ok());
  ASSERT_TRUE(kv.free(a).ok());
  std::vector<int32_t> second = system;
  second.insert(second.end(), {50, 51, 52, 53});
  absl::StatusOr<PrefixMatch> m = cache.acquire(second, 8);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->cached_tokens, 5);
  cache.record_lookup(8, m->cached_tokens);
  EXPECT_DOUBLE_EQ(cache.stats().hit_rate(), 5.0 / 8.0);
}

TEST(PrefixCache, EvictsLeastRecentlyUsedUnreferencedLeaves) {
  KvPageTables kv = fake_kv(8, 4);
  PrefixCache cache(kv);
  const std::vector<int32_t> x = {1, 2, 3, 4, 5, 6, 7, 8}, y = {9, 10, 11, 12, 13, 14, 15, 16};
  for (const auto* t : {&x, &y}) {
    SeqId s = filled(kv, *t);
    ASSERT_TRUE(cache.insert(*t, s, 8, true).ok());
    ASSERT_TRUE(kv.free(s).ok());
  }
  EXPECT_EQ(kv.pool().used_pages(), 4);
  // Touch x: y is now the least recently used.
  absl::StatusOr<PrefixMatch> hold = cache.acquire(x, 7);
  ASSERT_TRUE(hold.ok());
  EXPECT_EQ(cache.evict(1), 1);
  absl::StatusOr<PrefixMatch> y_again = cache.acquire(y, 7);
  EXPECT_EQ(y_again->cached_tokens, 4);  // y's second page went first
  ASSERT_TRUE(kv.free(y_again->seq).ok());
  // x's pages are in use by `hold`: evicting everything frees y's pages only.
  EXPECT_EQ(cache.evict(100), 1);
  EXPECT_EQ(kv.pool().used_pages(), 2);  // x's two pages (held by `hold` and the cache)
  ASSERT_TRUE(kv.free(hold->seq).ok());
  EXPECT_EQ(cache.evict(100), 2);
  EXPECT_EQ(kv.pool().used_pages(), 0);
  EXPECT_EQ(cache.num_nodes(), 0);
  EXPECT_EQ(cache.stats().evicted_pages, 4);
}

TEST(PrefixCache, InsertChecksTheLength) {
  KvPageTables kv = fake_kv(8, 4);
  PrefixCache cache(kv);
  SeqId s = filled(kv, {1, 2, 3});
  EXPECT_TRUE(absl::IsInvalidArgument(cache.insert({1, 2, 3, 4}, s, 4, true)));
  EXPECT_TRUE(absl::IsInvalidArgument(cache.insert({1, 2, 3}, 99, 1, true)));
}

}  // namespace
}  // namespace kiln
