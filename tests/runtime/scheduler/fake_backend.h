// FakeBackend: a Backend whose "model" hashes every token in a sequence's KV pages, so its next
// token depends on the whole context as stored through the page tables: a wrong page, a missed
// copy-on-write or a stale cached prefix changes the output.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "runtime/backend.h"
#include "runtime/kv/page_tables.h"

namespace kiln::testing {

class FakeBackend : public Backend {
 public:
  FakeBackend(int32_t pages, int32_t page_size, int32_t vocab) : vocab_(vocab) {
    plan_.kv.page_size = page_size;
    pages_ = pages;
    slots_.assign(int64_t{pages} * page_size, -1);
  }

  std::string name() const override { return "fake"; }
  const Plan& plan() const override { return plan_; }
  int64_t kv_pages() const override { return pages_; }
  std::string load_report() const override { return "fake"; }

  absl::Status copy_kv_pages(absl::Span<const PageCopy> copies) override {
    const int64_t ps = plan_.kv.page_size;
    for (const PageCopy& c : copies) {
      std::copy_n(slots_.begin() + c.src * ps, ps, slots_.begin() + c.dst * ps);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<StepResult> run_step(const StepRequest& step) override {
    if (fail_next_) {
      fail_next_ = false;
      return absl::InternalError("injected failure");
    }
    const int32_t ps = plan_.kv.page_size;
    const StepMetadata& m = step.inputs.metadata;
    for (int32_t t = 0; t < m.num_tokens(); ++t) slots_[m.slot_mapping[t]] = step.inputs.tokens[t];
    StepResult r;
    for (int32_t s = 0; s < m.num_sequences(); ++s) {
      const int32_t first = m.kv_page_indptr[s], last = m.kv_page_indptr[s + 1];
      const int32_t len = (last - first - 1) * ps + m.kv_last_page_len[s];
      uint64_t h = 1469598103934665603ull;  // FNV-1a over (position, token)
      for (int32_t p = 0; p < len; ++p) {
        const int32_t tok = slots_[int64_t{m.kv_page_indices[first + p / ps]} * ps + p % ps];
        h = (h ^ static_cast<uint64_t>(tok + 7919 * p)) * 1099511628211ull;
      }
      r.tokens.push_back(static_cast<int32_t>(h % static_cast<uint64_t>(vocab_)));
    }
    return r;
  }

  void fail_next() { fail_next_ = true; }

 private:
  Plan plan_;
  int64_t pages_ = 0;
  int32_t vocab_;
  std::vector<int32_t> slots_;  // [pages * page_size] the token id stored in each K/V slot
  bool fail_next_ = false;
};

inline KvPageTables fake_kv(int32_t pages, int32_t page_size) {
  KvPageTablesConfig c;
  c.page_size = page_size;
  c.num_pages = pages;
  return *KvPageTables::create(c);
}

}  // namespace kiln::testing
