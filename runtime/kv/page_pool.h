// PagePool: fixed-size KV pages with reference counts, the allocator under the paged KV cache.
#pragma once

#include <cstdint>
#include <functional>
#include <queue>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kiln {

/// A pool of `num_pages` pages of `page_size` tokens each. A page is identified by its index in
/// [0, num_pages). It holds no memory itself: the KV storage (host arrays or device memory)
/// is indexed by the page numbers this pool hands out.
///
/// Reference counts let several sequences share a page (a forked or cached prefix): a page
/// returns to the free list when its count drops to 0.
///
/// Allocation order is deterministic: the lowest-numbered free page first. That keeps page
/// tables reproducible run to run (tests and IR dumps can name pages) and the in-use region
/// compact at the low end of the pool.
class PagePool {
 public:
  static constexpr int32_t kDefaultPageSize = 16;

  /// `num_pages` >= 0 and `page_size` >= 1 are the caller's contract (PagedKvCache::create
  /// validates its config before building a pool).
  explicit PagePool(int32_t num_pages, int32_t page_size = kDefaultPageSize);

  /// Takes the lowest free page with reference count 1, or ResourceExhausted when none is free.
  absl::StatusOr<int32_t> allocate();
  /// Adds a reference to an allocated page. FailedPrecondition for a free page (it could be
  /// handed out again under the new owner), InvalidArgument out of range.
  absl::Status retain(int32_t page);
  /// Drops a reference; at 0 the page is free again. FailedPrecondition for a free page (a
  /// double release), InvalidArgument out of range.
  absl::Status release(int32_t page);

  int32_t num_pages() const { return static_cast<int32_t>(ref_counts_.size()); }
  int32_t page_size() const { return page_size_; }
  int32_t free_pages() const { return static_cast<int32_t>(free_.size()); }
  int32_t used_pages() const { return num_pages() - free_pages(); }
  /// The page's reference count; 0 for a free page or an index out of range.
  int32_t ref_count(int32_t page) const;

 private:
  absl::Status check_page(int32_t page) const;

  int32_t page_size_;
  std::vector<int32_t> ref_counts_;  // [num_pages]
  // Min-heap of free page indices: lowest first, O(log n) per allocate/release.
  std::priority_queue<int32_t, std::vector<int32_t>, std::greater<int32_t>> free_;
};

}  // namespace kiln
