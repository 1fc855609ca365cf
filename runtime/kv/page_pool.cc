// PagePool: fixed-size KV pages with reference counts.
#include "runtime/kv/page_pool.h"

#include "absl/strings/str_cat.h"

namespace kiln {

PagePool::PagePool(int32_t num_pages, int32_t page_size)
    : page_size_(page_size), ref_counts_(num_pages > 0 ? num_pages : 0, 0) {
  std::vector<int32_t> all(ref_counts_.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int32_t>(i);
  // Ascending input is already a valid min-heap: the constructor does not need to sift.
  free_ = decltype(free_)(std::greater<int32_t>(), std::move(all));
}

absl::StatusOr<int32_t> PagePool::allocate() {
  if (free_.empty()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV cache is out of pages: ", used_pages(), " in use of ", num_pages(), " (page size ",
        page_size_, " tokens); finish or preempt a sequence, or give the KV cache more memory"));
  }
  int32_t page = free_.top();
  free_.pop();
  ref_counts_[page] = 1;
  return page;
}

absl::Status PagePool::check_page(int32_t page) const {
  if (page < 0 || page >= num_pages()) {
    return absl::InvalidArgumentError(
        absl::StrCat("page ", page, " is out of range: the pool has ", num_pages(), " pages"));
  }
  return absl::OkStatus();
}

absl::Status PagePool::retain(int32_t page) {
  if (absl::Status s = check_page(page); !s.ok()) return s;
  if (ref_counts_[page] == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot retain page ", page, ": it is free (not allocated)"));
  }
  ++ref_counts_[page];
  return absl::OkStatus();
}

absl::Status PagePool::release(int32_t page) {
  if (absl::Status s = check_page(page); !s.ok()) return s;
  if (ref_counts_[page] == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot release page ", page, ": it is already free (double release)"));
  }
  if (--ref_counts_[page] == 0) free_.push(page);
  return absl::OkStatus();
}

int32_t PagePool::ref_count(int32_t page) const {
  if (page < 0 || page >= num_pages()) return 0;
  return ref_counts_[page];
}

}  // namespace kiln
