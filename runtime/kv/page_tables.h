// KvPageTables: per-sequence page tables over a PagePool, with fork (copy-on-write) and truncate.
// Tables only: the K/V rows live in the backend's storage, indexed by the same page numbers.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/kv/page_copy.h"
#include "runtime/kv/page_pool.h"

namespace kiln {

/// Identifies a sequence in a KvPageTables. Ids are never reused, so a stale id is detected
/// (InvalidArgument) instead of silently naming a newer sequence.
using SeqId = int64_t;

struct KvPageTablesConfig {
  int32_t page_size = PagePool::kDefaultPageSize;
  int32_t num_pages = 0;  ///< the backend's KV storage pages (Backend::kv_pages())
};

/// One sequence's reservation request in a batch.
struct KvReservation {
  SeqId seq = 0;
  int64_t num_new_tokens = 0;
};

/// The page tables of the paged KV cache, shared by both backends. Each sequence has a page table
/// (its pages in token order) and a length (tokens with an assigned slot); token `i` of a sequence
/// lives at slot `pages[i / PS] * PS + i % PS`. Invariant: `pages.size() == ceil(length / PS)`.
///
/// Sharing: `fork` shares every page of the parent by reference count. Full pages are never
/// written again, so they stay shared. The partly filled last page is copied on write: the
/// first `reserve` that appends into a shared page gives that sequence a private page and records
/// a PageCopy (take_pending_copies); the backend copies the rows before the step writes K/V, so
/// the other owner's data stays untouched.
///
/// Every method taking a SeqId answers InvalidArgument for an unknown id.
class KvPageTables {
 public:
  /// Validates the config (sizes positive, `num_pages * page_size` fits int32 so slots do).
  static absl::StatusOr<KvPageTables> create(const KvPageTablesConfig& config);

  KvPageTables(KvPageTables&&) = default;
  KvPageTables& operator=(KvPageTables&&) = default;

  const KvPageTablesConfig& config() const { return config_; }
  const PagePool& pool() const { return pool_; }
  int32_t page_size() const { return config_.page_size; }
  int32_t free_pages() const { return pool_.free_pages(); }

  /// Starts an empty sequence (no pages).
  SeqId add_sequence();
  /// Forks `seq`: the child has the same length and shares all of the parent's pages.
  absl::StatusOr<SeqId> fork(SeqId seq);
  /// Removes the sequence and releases its pages.
  absl::Status free(SeqId seq);
  /// Shrinks the sequence to `new_len` tokens (preemption, speculative rollback), releasing
  /// the pages past it. `new_len` must be in [0, length].
  absl::Status truncate(SeqId seq, int64_t new_len);

  /// Appends slots for `num_new_tokens` tokens, allocating pages (and a copy-on-write page if
  /// the last page is shared and partly filled). All or nothing: on ResourceExhausted nothing
  /// changes, and the message says how many pages were needed and how many are free.
  absl::Status reserve(SeqId seq, int64_t num_new_tokens);
  /// `reserve` for several distinct sequences at once, all or nothing across the batch.
  absl::Status reserve(absl::Span<const KvReservation> batch);
  /// Pages `reserve(batch)` would take from the pool now (new pages plus copy-on-write copies).
  absl::StatusOr<int64_t> pages_needed(absl::Span<const KvReservation> batch) const;

  bool contains(SeqId seq) const { return seqs_.contains(seq); }
  int64_t num_sequences() const { return static_cast<int64_t>(seqs_.size()); }
  /// Live sequence ids in ascending order.
  std::vector<SeqId> sequences() const;
  absl::StatusOr<int64_t> length(SeqId seq) const;
  /// The sequence's pages in token order.
  absl::StatusOr<absl::Span<const int32_t>> page_table(SeqId seq) const;
  /// The slot (page * PS + offset) of token `position` of the sequence; position < length.
  absl::StatusOr<int32_t> slot(SeqId seq, int64_t position) const;

  /// The copy-on-write copies `reserve` decided since the last call, in order. The backend must
  /// run them (Backend::copy_kv_pages) before the step's kernels write K/V; the source pages stay
  /// valid until then because nothing is written before the step runs.
  std::vector<PageCopy> take_pending_copies() { return std::exchange(pending_copies_, {}); }

 private:
  struct Sequence {
    int64_t length = 0;
    std::vector<int32_t> pages;
  };

  explicit KvPageTables(const KvPageTablesConfig& config);
  absl::StatusOr<const Sequence*> find(SeqId seq) const;
  // Pages this sequence's append takes; `cow_released` counts earlier copy-on-write releases
  // of shared pages in the same batch, which may make a later owner the sole one.
  int64_t pages_for_append(const Sequence& s, int64_t n,
                           std::map<int32_t, int32_t>& cow_released) const;
  void release_pages(std::vector<int32_t>& pages, size_t keep);

  KvPageTablesConfig config_;
  PagePool pool_;
  std::map<SeqId, Sequence> seqs_;  // ordered: deterministic iteration
  SeqId next_id_ = 0;
  std::vector<PageCopy> pending_copies_;
};

}  // namespace kiln
