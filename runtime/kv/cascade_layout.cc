// CascadeLayout: shared-prefix detection over a step's page lists (see cascade_layout.h).
#include "runtime/kv/cascade_layout.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace kiln {
namespace {

int32_t kv_len(const StepMetadata& m, int32_t page_size, int32_t s) {
  const int32_t pages = m.kv_page_indptr[s + 1] - m.kv_page_indptr[s];
  return pages == 0 ? 0 : (pages - 1) * page_size + m.kv_last_page_len[s];
}

bool is_decode(const StepMetadata& m) {
  for (int32_t s = 0; s < m.num_sequences(); ++s) {
    if (m.qo_indptr[s + 1] - m.qo_indptr[s] != 1) return false;
  }
  return m.num_sequences() > 0;
}

}  // namespace

std::optional<CascadeLayout> find_shared_prefix(const StepMetadata& m, int32_t page_size,
                                                const CascadeOptions& options) {
  // Prefill rows see only the KV before their own positions; the prefix kernel has no causal
  // mask, so only decode steps (whose one query sees its whole KV) qualify.
  if (!is_decode(m) || page_size < 1) return std::nullopt;
  const int32_t S = m.num_sequences();
  // Candidate groups: sequences whose page lists start with the same physical page.
  absl::flat_hash_map<int32_t, std::vector<int32_t>> by_first_page;
  for (int32_t s = 0; s < S; ++s) {
    if (m.kv_page_indptr[s + 1] > m.kv_page_indptr[s]) {
      by_first_page[m.kv_page_indices[m.kv_page_indptr[s]]].push_back(s);
    }
  }
  int64_t best_saved = 0;
  int32_t best_ref = -1, best_len = 0;
  std::vector<int32_t> best_members;
  for (const auto& [page, group] : by_first_page) {
    if (static_cast<int32_t>(group.size()) < options.min_sequences) continue;
    // Shared tokens of each member with the group's first sequence (the reference): two members
    // that each share L tokens with the reference share those L tokens with each other.
    const int32_t ref = group[0];
    const int32_t ref_begin = m.kv_page_indptr[ref];
    const int32_t ref_pages = m.kv_page_indptr[ref + 1] - ref_begin;
    std::vector<std::pair<int32_t, int32_t>> shared;  // (tokens, sequence)
    for (int32_t s : group) {
      const int32_t begin = m.kv_page_indptr[s];
      const int32_t pages = std::min(ref_pages, m.kv_page_indptr[s + 1] - begin);
      int32_t same = 0;
      while (same < pages &&
             m.kv_page_indices[begin + same] == m.kv_page_indices[ref_begin + same]) {
        ++same;
      }
      const int32_t tokens =
          std::min({same * page_size, kv_len(m, page_size, s), kv_len(m, page_size, ref)});
      shared.emplace_back(tokens, s);
    }
    // Longest first: the i + 1 longest members share shared[i].first tokens.
    std::sort(shared.begin(), shared.end(), std::greater<>());
    for (size_t i = 1; i < shared.size(); ++i) {
      const int32_t len = shared[i].first;
      const int32_t members = static_cast<int32_t>(i + 1);
      if (members < options.min_sequences || len < options.min_prefix_tokens || len < 1) continue;
      const int64_t saved = static_cast<int64_t>(members - 1) * len;
      if (saved > best_saved) {
        best_saved = saved, best_ref = ref, best_len = len;
        best_members.clear();
        for (size_t j = 0; j <= i; ++j) best_members.push_back(shared[j].second);
      }
    }
  }
  if (best_ref < 0) return std::nullopt;
  CascadeLayout layout;
  layout.prefix_len = best_len;
  const int32_t prefix_pages = (best_len + page_size - 1) / page_size;
  const int32_t ref_begin = m.kv_page_indptr[best_ref];
  layout.prefix_pages.assign(m.kv_page_indices.begin() + ref_begin,
                             m.kv_page_indices.begin() + ref_begin + prefix_pages);
  std::sort(best_members.begin(), best_members.end());
  layout.prefix_seqs = std::move(best_members);
  layout.kv_start.assign(S, 0);
  for (int32_t s : layout.prefix_seqs) layout.kv_start[s] = best_len;
  return layout;
}

absl::Status check_cascade_layout(const CascadeLayout& layout, const StepMetadata& m,
                                  int32_t page_size) {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("cascade layout: ", parts...));
  };
  const int32_t S = m.num_sequences();
  if (page_size < 1) return bad("page size ", page_size);
  if (static_cast<int32_t>(layout.kv_start.size()) != S) {
    return bad("kv_start has ", layout.kv_start.size(), " entries for ", S, " sequences");
  }
  if (layout.prefix_len < 1) return bad("prefix_len ", layout.prefix_len, " (at least 1)");
  const int32_t pages = (layout.prefix_len + page_size - 1) / page_size;
  if (static_cast<int32_t>(layout.prefix_pages.size()) != pages) {
    return bad(layout.prefix_pages.size(), " prefix pages for ", layout.prefix_len,
               " tokens of page size ", page_size, " (expected ", pages, ")");
  }
  std::vector<bool> member(S, false);
  for (size_t i = 0; i < layout.prefix_seqs.size(); ++i) {
    const int32_t s = layout.prefix_seqs[i];
    if (s < 0 || s >= S) return bad("member ", s, " out of range [0, ", S, ")");
    if (i > 0 && s <= layout.prefix_seqs[i - 1]) return bad("members not ascending at [", i, "]");
    member[s] = true;
    const int32_t len = kv_len(m, page_size, s);
    if (layout.prefix_len > len) {
      return bad("prefix of ", layout.prefix_len, " tokens exceeds sequence ", s, "'s ", len);
    }
    for (int32_t p = 0; p < pages; ++p) {
      if (m.kv_page_indices[m.kv_page_indptr[s] + p] != layout.prefix_pages[p]) {
        return bad("sequence ", s, "'s page ", p, " is not the prefix's page ",
                   layout.prefix_pages[p]);
      }
    }
  }
  for (int32_t s = 0; s < S; ++s) {
    const int32_t want = member[s] ? layout.prefix_len : 0;
    if (layout.kv_start[s] != want) {
      return bad("kv_start[", s, "] = ", layout.kv_start[s], ", expected ", want);
    }
  }
  return absl::OkStatus();
}

}  // namespace kiln
