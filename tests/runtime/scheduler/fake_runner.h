// FakeRunner: a StepRunner whose "model" hashes every token in a sequence's KV pages, so its next
// token depends on the whole context as stored in the page tables: a wrong page, a missed
// copy-on-write or a stale cached prefix changes the output.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/kv_cache.h"
#include "runtime/scheduler/step_runner.h"

namespace kiln::testing {

class FakeRunner : public StepRunner {
 public:
  /// `kv` must use KvStorage::kNone: the runner keeps the "K/V" (the token ids) itself.
  FakeRunner(const PagedKvCache& kv, int32_t vocab)
      : page_size_(kv.page_size()),
        vocab_(vocab),
        slots_(int64_t{kv.config().num_pages} * kv.page_size(), -1) {}

  absl::StatusOr<std::vector<int32_t>> run(const ScheduledStep& step,
                                           absl::Span<Sampler* const>) override {
    if (fail_next_) {
      fail_next_ = false;
      return absl::InternalError("injected failure");
    }
    for (const PageCopy& c : step.copies) {
      std::copy_n(slots_.begin() + int64_t{c.src} * page_size_, page_size_,
                  slots_.begin() + int64_t{c.dst} * page_size_);
    }
    const StepMetadata& m = step.metadata;
    for (int32_t t = 0; t < m.num_tokens(); ++t) slots_[m.slot_mapping[t]] = step.tokens[t];
    std::vector<int32_t> out;
    for (int32_t s = 0; s < m.num_sequences(); ++s) {
      const int32_t first = m.kv_page_indptr[s], last = m.kv_page_indptr[s + 1];
      const int32_t len = (last - first - 1) * page_size_ + m.kv_last_page_len[s];
      uint64_t h = 1469598103934665603ull;  // FNV-1a over (position, token)
      for (int32_t p = 0; p < len; ++p) {
        const int32_t tok = slots_[int64_t{m.kv_page_indices[first + p / page_size_]} * page_size_ +
                                   p % page_size_];
        h = (h ^ static_cast<uint64_t>(tok + 7919 * p)) * 1099511628211ull;
      }
      out.push_back(static_cast<int32_t>(h % static_cast<uint64_t>(vocab_)));
    }
    max_tokens_seen = std::max(max_tokens_seen, m.num_tokens());
    return out;
  }

  void fail_next() { fail_next_ = true; }
  int32_t max_tokens_seen = 0;

 private:
  int32_t page_size_;
  int32_t vocab_;
  std::vector<int32_t> slots_;  // [pages * page_size] token id stored in each K/V slot
  bool fail_next_ = false;
};

inline PagedKvCache fake_kv(int32_t pages, int32_t page_size) {
  KvCacheConfig c;
  c.num_layers = 1;
  c.num_kv_heads = 1;
  c.head_dim = 1;
  c.page_size = page_size;
  c.num_pages = pages;
  c.storage = KvStorage::kNone;
  return *PagedKvCache::create(c);
}

}  // namespace kiln::testing
