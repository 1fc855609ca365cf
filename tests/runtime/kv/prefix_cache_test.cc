// PrefixCache: full-page and sub-page hits share the cached pages (copy-on-write of a shared
// partly filled page), LRU eviction frees only pages no live sequence uses, hit statistics.
#include "runtime/kv/prefix_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "absl/container/flat_hash_set.h"

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

// num_pages() is kept incrementally (kiln serve reads it after every step); it must equal the
// pages referenced by the cache's holder sequences — every sequence that is not a live request —
// through random admissions from shared prompts, duplicate computations of one prefix into
// different pages (two requests prefilled before either was cached), releases and evictions.
TEST(PrefixCache, PageCountEqualsThePagesItsHoldersReference) {
  KvPageTables kv = fake_kv(64, 4);
  PrefixCache cache(kv);
  std::mt19937 rng(7);
  auto brute_force = [&](const std::vector<SeqId>& live) {
    absl::flat_hash_set<int32_t> pages;
    for (SeqId s : kv.sequences()) {
      if (std::find(live.begin(), live.end(), s) != live.end()) continue;
      // Bind the StatusOr: a range-for over `*kv.page_table(s)` would outlive the temporary.
      const absl::StatusOr<absl::Span<const int32_t>> table = kv.page_table(s);
      for (int32_t p : *table) pages.insert(p);
    }
    return static_cast<int64_t>(pages.size());
  };
  std::vector<SeqId> live;
  std::vector<std::vector<int32_t>> live_tokens;
  for (int step = 0; step < 400; ++step) {
    const int action = static_cast<int>(rng() % 4);
    if (action <= 1 && live.size() < 4) {
      // A prompt: one of two shared system prompts, then a few own tokens.
      std::vector<int32_t> t;
      const int32_t system = static_cast<int32_t>(rng() % 2);
      for (int i = 0; i < 6; ++i) t.push_back(100 * system + i);
      for (int i = 0, n = static_cast<int>(rng() % 7); i < n; ++i)
        t.push_back(static_cast<int32_t>(rng() % 3));
      // Sometimes compute it from scratch although it is cached (a concurrent duplicate).
      absl::StatusOr<PrefixMatch> m =
          rng() % 3 == 0 ? PrefixMatch{kv.add_sequence(), 0}
                         : cache.acquire(t, static_cast<int64_t>(t.size()) - 1);
      ASSERT_TRUE(m.ok());
      const int64_t rest = static_cast<int64_t>(t.size()) - m->cached_tokens;
      if (!kv.reserve(m->seq, rest).ok()) {
        cache.evict(kv.config().num_pages);
        if (!kv.reserve(m->seq, rest).ok()) {
          ASSERT_TRUE(kv.free(m->seq).ok());
          continue;
        }
      }
      (void)kv.take_pending_copies();
      if (rng() % 2 == 0) {
        ASSERT_TRUE(cache.insert(t, m->seq, static_cast<int64_t>(t.size()), false).ok());
      }
      live.push_back(m->seq);
      live_tokens.push_back(t);
    } else if (action == 2 && !live.empty()) {
      const size_t i = rng() % live.size();
      ASSERT_TRUE(cache.insert(live_tokens[i], live[i], *kv.length(live[i]), true).ok());
      ASSERT_TRUE(kv.free(live[i]).ok());
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      live_tokens.erase(live_tokens.begin() + static_cast<std::ptrdiff_t>(i));
    } else if (action == 3) {
      cache.evict(1 + static_cast<int64_t>(rng() % 4));
    }
    ASSERT_EQ(cache.num_pages(), brute_force(live)) << "after step " << step;
  }
  cache.clear();
  EXPECT_EQ(cache.num_pages(), 0);
  EXPECT_EQ(cache.num_nodes(), 0);
}

}  // namespace
}  // namespace kiln
