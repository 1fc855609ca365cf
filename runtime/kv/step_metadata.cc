// StepMetadata: one ragged step's CSR-style graph inputs (FlashInfer layout) from the KV page
// tables.
#include "runtime/kv/step_metadata.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kiln {

absl::StatusOr<StepMetadata> build_step_metadata(KvPageTables& tables,
                                                 absl::Span<const StepSequence> step) {
  std::vector<KvReservation> batch;
  std::vector<int64_t> old_len;
  batch.reserve(step.size());
  old_len.reserve(step.size());
  int64_t total_tokens = 0;
  for (const StepSequence& s : step) {
    if (s.num_new_tokens < 1) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", s.seq, " has ", s.num_new_tokens,
                                                     " new tokens in the step; at least 1"));
    }
    auto len = tables.length(s.seq);
    if (!len.ok()) return len.status();
    old_len.push_back(*len);
    batch.push_back({s.seq, s.num_new_tokens});
    total_tokens += s.num_new_tokens;
  }
  // The tables validate the rest (duplicates, capacity) and is all or nothing.
  if (absl::Status s = tables.reserve(batch); !s.ok()) return s;

  const int32_t ps = tables.page_size();
  StepMetadata m;
  m.positions.reserve(total_tokens);
  m.slot_mapping.reserve(total_tokens);
  m.qo_indptr.reserve(step.size() + 1);
  m.kv_page_indptr.reserve(step.size() + 1);
  m.kv_last_page_len.reserve(step.size());
  m.qo_indptr.push_back(0);
  m.kv_page_indptr.push_back(0);
  for (size_t i = 0; i < step.size(); ++i) {
    // Lengths are bounded by num_pages * page_size, which create() keeps within int32.
    absl::Span<const int32_t> pages = *tables.page_table(step[i].seq);
    const int32_t first = static_cast<int32_t>(old_len[i]);
    const int32_t kv_len = first + step[i].num_new_tokens;
    for (int32_t pos = first; pos < kv_len; ++pos) {
      m.positions.push_back(pos);
      m.slot_mapping.push_back(pages[pos / ps] * ps + pos % ps);
    }
    m.qo_indptr.push_back(static_cast<int32_t>(m.positions.size()));
    m.kv_page_indices.insert(m.kv_page_indices.end(), pages.begin(), pages.end());
    m.kv_page_indptr.push_back(static_cast<int32_t>(m.kv_page_indices.size()));
    m.kv_last_page_len.push_back(kv_len - (static_cast<int32_t>(pages.size()) - 1) * ps);
    m.max_kv_len = std::max(m.max_kv_len, kv_len);
  }
  return m;
}

}  // namespace kiln
