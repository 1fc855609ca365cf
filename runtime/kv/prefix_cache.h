// PrefixCache: a radix tree over token ids at page granularity (RadixAttention) that keeps the KV
// pages of finished and prefilled sequences so later requests with the same prefix skip its
// prefill; LRU eviction of pages no live sequence references; hit statistics.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/kv/page_tables.h"

namespace kiln {

/// Hit statistics, counted per admitted lookup.
struct PrefixCacheStats {
  int64_t lookups = 0;
  int64_t lookup_tokens = 0;  ///< tokens asked for (each lookup's `max_len`)
  int64_t hit_tokens = 0;     ///< of those, tokens served from cached pages
  int64_t evicted_pages = 0;
  double hit_rate() const {
    return lookup_tokens > 0 ? static_cast<double>(hit_tokens) / lookup_tokens : 0.0;
  }
};

/// A new sequence started from the cache: its first `cached_tokens` tokens already have K/V.
struct PrefixMatch {
  SeqId seq = 0;
  int64_t cached_tokens = 0;
};

/// Each tree node is one page of tokens: a full page (page_size tokens, may have children) or
/// a partly filled last page (a leaf). A node owns a *holder* sequence in the KvPageTables whose
/// page table is the pages from the root to the node, so the cache's references are ordinary
/// page-table references: forking a holder shares its pages with a new request, and freeing it
/// drops them. Pages are reference-counted by the PagePool, so a page stays alive while any
/// request or node uses it.
///
/// Reuse below page granularity: when a request shares only part of a page with a cached node
/// (a system prompt shorter than one page, or a prompt that ends inside a cached page), the new
/// sequence forks the node and truncates to the shared tokens; the partly filled shared page is
/// then copied on write by the KV cache when the request appends its own tokens. So even a
/// prefix shorter than one page is reused (one page copy instead of recomputing the tokens).
///
/// The result is exact: a cached page holds the K/V the same tokens at the same positions
/// produce, and the reference backend computes each token's K/V independently of how the
/// prompt was chunked or batched, so a hit gives the same tokens as a miss.
///
/// Not thread-safe: owned by the one thread that runs the scheduler.
class PrefixCache {
 public:
  /// `kv` must outlive the cache. Call clear() before destroying `kv`'s sequences wholesale.
  explicit PrefixCache(KvPageTables& kv);
  ~PrefixCache();
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  /// Starts a sequence for `tokens` that shares the longest cached prefix of at most `max_len`
  /// tokens (max_len < tokens.size() leaves the last prompt token to compute, whose logits the
  /// request needs). With no hit the sequence is empty. Marks the matched nodes as used.
  absl::StatusOr<PrefixMatch> acquire(absl::Span<const int32_t> tokens, int64_t max_len);
  /// Counts one admitted lookup in the statistics.
  void record_lookup(int64_t max_len, int64_t cached_tokens);

  /// Caches the first `length` tokens of `seq` (whose K/V must already be written): every full
  /// page, and the partly filled last page too when `include_partial_page`. Nodes already cached
  /// for the same tokens are kept (and marked used). InvalidArgument when `length` exceeds the
  /// sequence's length or `tokens`.
  absl::Status insert(absl::Span<const int32_t> tokens, SeqId seq, int64_t length,
                      bool include_partial_page);

  /// Frees least recently used leaves whose last page no sequence other than the cache uses,
  /// until at least `pages` pages went back to the pool or nothing more can be evicted.
  /// Returns the pages freed.
  int64_t evict(int64_t pages);
  /// Drops every node (pages still used by live sequences stay with them).
  void clear();

  /// Nodes in the tree: about the pages the cache holds (a node holds one page of its own).
  int64_t num_nodes() const { return num_nodes_; }
  /// Distinct pages the cache's nodes reference (some may be shared with live sequences). O(1):
  /// `kiln serve` reads it after every step for /metrics.
  int64_t num_pages() const { return static_cast<int64_t>(page_refs_.size()); }
  const PrefixCacheStats& stats() const { return stats_; }

 private:
  struct Node {
    std::vector<int32_t> tokens;  // this page's tokens: page_size, or fewer for a partial leaf
    SeqId holder = -1;            // pages root..this node; -1 for the root
    Node* parent = nullptr;
    std::map<std::vector<int32_t>, std::unique_ptr<Node>> children;  // ordered: deterministic
    uint64_t last_use = 0;
  };

  void collect_leaves(Node* node, std::vector<Node*>& out) const;
  bool evictable(const Node* leaf) const;
  void drop_subtree(Node* node);
  // Adds `delta` to the count of every page in `holder`'s page table (+1 when a node takes the
  // holder, -1 before it is freed). Counting every page, not only a node's own last one, keeps
  // the figure exact when two requests computed the same prefix into different pages.
  void count_pages(SeqId holder, int32_t delta);

  KvPageTables& kv_;
  Node root_;
  uint64_t clock_ = 0;
  int64_t num_nodes_ = 0;
  absl::flat_hash_map<int32_t, int32_t> page_refs_;  // page -> nodes whose holder references it
  PrefixCacheStats stats_;
};

}  // namespace kiln
