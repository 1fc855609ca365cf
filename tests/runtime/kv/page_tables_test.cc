// KvPageTables: reserve/length/free, fork with copy-on-write, all-or-nothing failure, truncate,
// and a randomized property test that pages never leak and shared data is never clobbered.
#include "runtime/kv/page_tables.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <vector>

namespace kiln {
namespace {

KvPageTablesConfig small_config(int32_t num_pages, int32_t page_size = 4) {
  return {page_size, num_pages};
}

// K/V storage as a backend keeps it (2 layers, rows of 6 floats), so the tests can check that the
// copies the tables report keep every sequence's data intact.
struct HostRows {
  static constexpr int32_t kLayers = 2;
  static constexpr int64_t kRow = 6;
  int32_t page_size;
  std::vector<std::vector<float>> k, v;  // [layer][slot * kRow + j]

  explicit HostRows(const KvPageTablesConfig& c)
      : page_size(c.page_size),
        k(kLayers, std::vector<float>(int64_t{c.num_pages} * c.page_size * kRow)),
        v(k) {}
  // What Backend::copy_kv_pages does.
  void apply(const std::vector<PageCopy>& copies) {
    const int64_t n = page_size * kRow;
    for (const PageCopy& c : copies) {
      for (int32_t l = 0; l < kLayers; ++l) {
        std::copy_n(k[l].begin() + c.src * n, n, k[l].begin() + c.dst * n);
        std::copy_n(v[l].begin() + c.src * n, n, v[l].begin() + c.dst * n);
      }
    }
  }
};

// Reserves and lets the storage run the copies the reservation asked for, as the engine does.
absl::Status reserve(KvPageTables& cache, HostRows& rows, SeqId seq, int64_t n) {
  absl::Status s = cache.reserve(seq, n);
  rows.apply(cache.take_pending_copies());
  return s;
}

// Writes a distinct pattern for (value, layer, element) into the token's K and V rows.
void write_token(const KvPageTables& cache, HostRows& rows, SeqId seq, int64_t pos, float value) {
  const int32_t slot = *cache.slot(seq, pos);
  const int64_t n = HostRows::kRow;
  for (int32_t layer = 0; layer < HostRows::kLayers; ++layer) {
    for (int64_t j = 0; j < n; ++j) {
      rows.k[layer][slot * n + j] = value + 1000.0f * layer + 0.25f * j;
      rows.v[layer][slot * n + j] = -(value + 1000.0f * layer + 0.25f * j);
    }
  }
}

// Whether the token's K and V rows hold the pattern write_token(value) left there.
bool token_holds(const KvPageTables& cache, const HostRows& rows, SeqId seq, int64_t pos,
                 float value) {
  const int32_t slot = *cache.slot(seq, pos);
  const int64_t n = HostRows::kRow;
  for (int32_t layer = 0; layer < HostRows::kLayers; ++layer) {
    for (int64_t j = 0; j < n; ++j) {
      if (rows.k[layer][slot * n + j] != value + 1000.0f * layer + 0.25f * j) return false;
      if (rows.v[layer][slot * n + j] != -(value + 1000.0f * layer + 0.25f * j)) return false;
    }
  }
  return true;
}

TEST(KvPageTables, ValidatesConfig) {
  KvPageTablesConfig c = small_config(8);
  c.page_size = 0;
  auto cache = KvPageTables::create(c);
  ASSERT_EQ(cache.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(cache.status().message().find("page_size"), std::string::npos);
  c = small_config(1 << 28, 16);  // 2^32 slots overflow the int32 slot_mapping
  EXPECT_EQ(KvPageTables::create(c).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvPageTables, ReserveGrowsPageTableAndLength) {
  KvPageTables cache = *KvPageTables::create(small_config(8));
  SeqId a = cache.add_sequence();
  EXPECT_EQ(*cache.length(a), 0);
  ASSERT_TRUE(cache.reserve(a, 5).ok());
  EXPECT_EQ(*cache.length(a), 5);
  EXPECT_EQ(cache.page_table(a)->size(), 2u);
  ASSERT_TRUE(cache.reserve(a, 3).ok());  // fills page 2 exactly: no new page
  EXPECT_EQ(cache.page_table(a)->size(), 2u);
  ASSERT_TRUE(cache.reserve(a, 1).ok());
  EXPECT_EQ(cache.page_table(a)->size(), 3u);
  EXPECT_EQ(cache.free_pages(), 5);
  EXPECT_EQ(*cache.slot(a, 8), (*cache.page_table(a))[2] * 4);
  ASSERT_TRUE(cache.free(a).ok());
  EXPECT_EQ(cache.free_pages(), 8);
  EXPECT_EQ(cache.num_sequences(), 0);
}

TEST(KvPageTables, UnknownSequencesAreInvalidArgument) {
  KvPageTables cache = *KvPageTables::create(small_config(4));
  SeqId a = cache.add_sequence();
  ASSERT_TRUE(cache.free(a).ok());
  EXPECT_EQ(cache.length(a).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.reserve(a, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.free(a).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.fork(a).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.truncate(a, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.page_table(a).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.slot(42, 0).status().code(), absl::StatusCode::kInvalidArgument);
  SeqId b = cache.add_sequence();
  EXPECT_NE(a, b);  // ids are not reused
  EXPECT_EQ(cache.reserve(b, -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.slot(b, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvPageTables, FailedReserveChangesNothing) {
  KvPageTables cache = *KvPageTables::create(small_config(6));
  SeqId a = cache.add_sequence();
  SeqId b = cache.add_sequence();
  SeqId other = cache.add_sequence();
  ASSERT_TRUE(cache.reserve(a, 6).ok());      // 2 pages
  ASSERT_TRUE(cache.reserve(other, 8).ok());  // 2 pages; 2 left
  std::vector<int32_t> table(cache.page_table(a)->begin(), cache.page_table(a)->end());
  absl::Status s = cache.reserve(a, 11);  // 17 tokens: 3 more pages, 2 free
  ASSERT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("needs 3 pages but only 2 are free"), std::string::npos) << s;
  EXPECT_EQ(*cache.length(a), 6);
  EXPECT_EQ(std::vector<int32_t>(cache.page_table(a)->begin(), cache.page_table(a)->end()), table);
  EXPECT_EQ(cache.free_pages(), 2);
  // Across a batch: each fits alone (1 + 2 pages), not both; neither changes.
  std::vector<KvReservation> batch = {{b, 4}, {a, 7}};
  EXPECT_EQ(cache.reserve(batch).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(*cache.length(b), 0);
  EXPECT_EQ(cache.free_pages(), 2);
  // More than the whole cache holds.
  EXPECT_EQ(cache.reserve(b, int64_t{1} << 40).code(), absl::StatusCode::kResourceExhausted);
  // A batch naming a sequence twice is rejected.
  batch = {{b, 1}, {b, 1}};
  EXPECT_EQ(cache.reserve(batch).code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvPageTables, ForkSharesPagesAndCopiesThePartialPageOnWrite) {
  KvPageTables cache = *KvPageTables::create(small_config(8));
  HostRows rows(cache.config());
  SeqId parent = cache.add_sequence();
  ASSERT_TRUE(reserve(cache, rows, parent, 6).ok());  // page 0 full, page 1 holds 2 tokens
  for (int64_t pos = 0; pos < 6; ++pos) write_token(cache, rows, parent, pos, 10.0f + pos);

  SeqId child = *cache.fork(parent);
  EXPECT_EQ(*cache.length(child), 6);
  const std::vector<int32_t> shared(cache.page_table(parent)->begin(),
                                    cache.page_table(parent)->end());
  EXPECT_EQ(std::vector<int32_t>(cache.page_table(child)->begin(), cache.page_table(child)->end()),
            shared);
  EXPECT_EQ(cache.pool().ref_count(shared[0]), 2);
  EXPECT_EQ(cache.pool().ref_count(shared[1]), 2);
  EXPECT_EQ(cache.free_pages(), 6);

  // The child appends into the shared partial page: it gets a copy with the same rows.
  ASSERT_TRUE(reserve(cache, rows, child, 1).ok());
  auto child_table = *cache.page_table(child);
  EXPECT_EQ(child_table[0], shared[0]);  // full page still shared
  EXPECT_NE(child_table[1], shared[1]);
  EXPECT_EQ(cache.pool().ref_count(shared[0]), 2);
  EXPECT_EQ(cache.pool().ref_count(shared[1]), 1);
  EXPECT_EQ(cache.free_pages(), 5);
  for (int64_t pos = 0; pos < 6; ++pos)
    EXPECT_TRUE(token_holds(cache, rows, child, pos, 10.0f + pos));

  // Writing the child's new token and overwriting its copied rows leaves the parent intact.
  write_token(cache, rows, child, 6, 99.0f);
  write_token(cache, rows, child, 5, -7.0f);
  for (int64_t pos = 0; pos < 6; ++pos) {
    EXPECT_TRUE(token_holds(cache, rows, parent, pos, 10.0f + pos));
  }

  // The parent is now the only owner of its partial page: it appends in place.
  ASSERT_TRUE(cache.reserve(parent, 1).ok());
  EXPECT_EQ((*cache.page_table(parent))[1], shared[1]);
  EXPECT_EQ(cache.free_pages(), 5);

  ASSERT_TRUE(cache.free(parent).ok());
  EXPECT_EQ(cache.pool().ref_count(shared[0]), 1);
  ASSERT_TRUE(cache.free(child).ok());
  EXPECT_EQ(cache.free_pages(), 8);
}

TEST(KvPageTables, ForkAtAPageBoundaryNeedsNoCopy) {
  KvPageTables cache = *KvPageTables::create(small_config(4));
  SeqId a = cache.add_sequence();
  ASSERT_TRUE(cache.reserve(a, 4).ok());
  SeqId b = *cache.fork(a);
  ASSERT_TRUE(cache.reserve(b, 1).ok());  // starts a fresh page
  EXPECT_EQ(cache.free_pages(), 2);
  EXPECT_EQ((*cache.page_table(b))[0], (*cache.page_table(a))[0]);
}

TEST(KvPageTables, CopyOnWriteCountsAgainstTheBudget) {
  KvPageTables cache = *KvPageTables::create(small_config(2));
  SeqId a = cache.add_sequence();
  ASSERT_TRUE(cache.reserve(a, 2).ok());
  SeqId b = *cache.fork(a);
  SeqId c = *cache.fork(a);
  // a and b both need a private copy of the page (c keeps the original): 2 pages, 1 free.
  std::vector<KvReservation> batch = {{a, 1}, {b, 1}};
  EXPECT_EQ(*cache.pages_needed(batch), 2);
  EXPECT_EQ(cache.reserve(batch).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(cache.pool().ref_count(0), 3);
  // a and all of its forks: the last one to write becomes the sole owner and copies nothing.
  ASSERT_TRUE(cache.free(c).ok());
  EXPECT_EQ(*cache.pages_needed(batch), 1);
  ASSERT_TRUE(cache.reserve(batch).ok());
  EXPECT_EQ(cache.free_pages(), 0);
}

TEST(KvPageTables, CopyOnWriteIsReportedOnceAsAPageCopy) {
  KvPageTables cache = *KvPageTables::create(small_config(4));
  SeqId a = cache.add_sequence();
  ASSERT_TRUE(cache.reserve(a, 3).ok());
  EXPECT_TRUE(cache.take_pending_copies().empty());  // nothing shared yet
  SeqId b = *cache.fork(a);
  ASSERT_TRUE(cache.reserve(b, 1).ok());
  std::vector<PageCopy> copies = cache.take_pending_copies();
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0], (PageCopy{(*cache.page_table(a))[0], (*cache.page_table(b))[0]}));
  EXPECT_TRUE(cache.take_pending_copies().empty());
}

TEST(KvPageTables, TruncateReleasesPagesPastTheNewLength) {
  KvPageTables cache = *KvPageTables::create(small_config(8));
  SeqId a = cache.add_sequence();
  ASSERT_TRUE(cache.reserve(a, 10).ok());  // 3 pages
  ASSERT_TRUE(cache.truncate(a, 5).ok());
  EXPECT_EQ(*cache.length(a), 5);
  EXPECT_EQ(cache.page_table(a)->size(), 2u);
  EXPECT_EQ(cache.free_pages(), 6);
  EXPECT_EQ(cache.truncate(a, 6).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.truncate(a, -1).code(), absl::StatusCode::kInvalidArgument);
  // Truncating into a shared full page makes it a shared partial page: the next write copies.
  SeqId b = *cache.fork(a);
  ASSERT_TRUE(cache.truncate(b, 3).ok());
  EXPECT_EQ(cache.page_table(b)->size(), 1u);
  ASSERT_TRUE(cache.reserve(b, 1).ok());
  EXPECT_NE((*cache.page_table(b))[0], (*cache.page_table(a))[0]);
  ASSERT_TRUE(cache.truncate(a, 0).ok());
  EXPECT_TRUE(cache.page_table(a)->empty());
  ASSERT_TRUE(cache.free(b).ok());
  EXPECT_EQ(cache.free_pages(), 8);
}

// Random add/reserve/fork/free/truncate against a shadow model of every sequence's token
// values. After every op: free + in-use == total, each page's refcount equals the number of
// page-table entries naming it, each table has ceil(length / PS) pages, and every token of
// every sequence still holds the value written for it (copy-on-write never clobbers a sibling).
TEST(KvPageTables, RandomOpsNeverLeakPagesOrCorruptSharedData) {
  constexpr int32_t kPages = 24;
  constexpr int32_t kPageSize = 4;
  KvPageTables cache = *KvPageTables::create(small_config(kPages, kPageSize));
  HostRows rows(cache.config());
  std::map<SeqId, std::vector<float>> shadow;
  std::mt19937_64 rng(20240611);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  auto any_seq = [&] {
    auto it = shadow.begin();
    std::advance(it, pick(shadow.size()));
    return it->first;
  };
  float next_value = 1.0f;
  int reserves_ok = 0, reserves_exhausted = 0, copies = 0;

  for (int op = 0; op < 4000; ++op) {
    // add 1, reserve 4, fork 1, free 2, truncate 2 (in tenths); capped at 16 live sequences
    // so that the pool is contended but the per-op checks stay cheap.
    int kind = shadow.empty() ? 0 : static_cast<int>(pick(10));
    if (shadow.size() >= 16 && (kind == 0 || kind == 5)) kind = 6;
    if (kind == 0) {
      shadow[cache.add_sequence()] = {};
    } else if (kind <= 4) {
      SeqId s = any_seq();
      const int64_t n = static_cast<int64_t>(pick(9));
      const int32_t free_before = cache.free_pages();
      const size_t pages_before = cache.page_table(s)->size();
      const int32_t last_before = pages_before == 0 ? -1 : cache.page_table(s)->back();
      absl::Status st = reserve(cache, rows, s, n);
      if (st.ok()) {
        ++reserves_ok;
        if (last_before >= 0 && (*cache.page_table(s))[pages_before - 1] != last_before) {
          ++copies;
        }
        for (int64_t i = 0; i < n; ++i) {
          write_token(cache, rows, s, static_cast<int64_t>(shadow[s].size()), next_value);
          shadow[s].push_back(next_value);
          next_value += 1.0f;
        }
      } else {
        ASSERT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
        ++reserves_exhausted;
        ASSERT_EQ(cache.free_pages(), free_before);
        ASSERT_EQ(*cache.length(s), static_cast<int64_t>(shadow[s].size()));
      }
    } else if (kind == 5) {
      SeqId s = any_seq();
      SeqId child = *cache.fork(s);
      shadow[child] = shadow[s];
    } else if (kind <= 7) {
      SeqId s = any_seq();
      ASSERT_TRUE(cache.free(s).ok());
      shadow.erase(s);
    } else {
      SeqId s = any_seq();
      const size_t new_len = shadow[s].empty() ? 0 : pick(shadow[s].size() + 1);
      ASSERT_TRUE(cache.truncate(s, static_cast<int64_t>(new_len)).ok());
      shadow[s].resize(new_len);
    }

    // Invariants.
    std::vector<int32_t> refs(kPages, 0);
    ASSERT_EQ(cache.num_sequences(), static_cast<int64_t>(shadow.size()));
    for (const auto& [s, values] : shadow) {
      ASSERT_EQ(*cache.length(s), static_cast<int64_t>(values.size()));
      auto table = *cache.page_table(s);
      ASSERT_EQ(static_cast<int64_t>(table.size()),
                (static_cast<int64_t>(values.size()) + kPageSize - 1) / kPageSize);
      for (int32_t page : table) ++refs[page];
      for (size_t pos = 0; pos < values.size(); ++pos) {
        ASSERT_TRUE(token_holds(cache, rows, s, static_cast<int64_t>(pos), values[pos]))
            << "op " << op << " seq " << s << " pos " << pos;
      }
    }
    int32_t in_use = 0;
    for (int32_t p = 0; p < kPages; ++p) {
      ASSERT_EQ(cache.pool().ref_count(p), refs[p]) << "page " << p << " at op " << op;
      in_use += refs[p] > 0;
    }
    ASSERT_EQ(cache.free_pages() + in_use, kPages) << "op " << op;
  }
  // The walk must have exercised the interesting paths.
  EXPECT_GT(reserves_ok, 500);
  EXPECT_GT(reserves_exhausted, 20);
  EXPECT_GT(copies, 20);
  for (const auto& [s, values] : shadow) ASSERT_TRUE(cache.free(s).ok());
  EXPECT_EQ(cache.free_pages(), kPages);
}

}  // namespace
}  // namespace kiln
