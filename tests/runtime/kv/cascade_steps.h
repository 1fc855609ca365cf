// Decode steps whose sequences share a prefix of pages, for the cascade tests (layout detection,
// the reference's cascade attention, the GPU kernels): made by hand or at random from a known
// prefix/suffix split.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "runtime/kv/step_metadata.h"

namespace kiln::testing {

/// A decode step (one query token each) over the given page lists and KV lengths.
inline StepMetadata decode_step(const std::vector<std::vector<int32_t>>& pages,
                                const std::vector<int32_t>& kv_len, int32_t page_size) {
  StepMetadata m;
  m.qo_indptr.push_back(0);
  m.kv_page_indptr.push_back(0);
  for (size_t s = 0; s < pages.size(); ++s) {
    m.positions.push_back(kv_len[s] - 1);
    m.slot_mapping.push_back(pages[s][(kv_len[s] - 1) / page_size] * page_size +
                             (kv_len[s] - 1) % page_size);
    m.qo_indptr.push_back(static_cast<int32_t>(s + 1));
    m.kv_page_indices.insert(m.kv_page_indices.end(), pages[s].begin(), pages[s].end());
    m.kv_page_indptr.push_back(static_cast<int32_t>(m.kv_page_indices.size()));
    m.kv_last_page_len.push_back(kv_len[s] -
                                 (static_cast<int32_t>(pages[s].size()) - 1) * page_size);
    m.max_kv_len = std::max(m.max_kv_len, kv_len[s]);
  }
  return m;
}

/// A random split: `members` of `seqs` sequences (at random step positions) share
/// `shared_pages` pages; each member either has its own suffix pages after them or (one in five,
/// or every one when `empty_suffixes`) ends inside them, at any length, so the prefix may end
/// mid-page with an empty suffix; the other sequences have pages of their own. Pages are
/// numbered from 0 and shuffled in the pool so the shared ones are not simply the first.
struct SharedStep {
  StepMetadata metadata;
  int32_t num_pages = 0;             // pool pages used
  int32_t shared_len = 0;            // tokens every member shares: min(pages x PS, members' KV)
  std::vector<int32_t> member_seqs;  // ascending step indices
};

inline SharedStep random_shared_step(std::mt19937& rng, int32_t page_size, int32_t seqs,
                                     int32_t members, int32_t shared_pages,
                                     int32_t max_suffix_pages, bool empty_suffixes = false) {
  int32_t next_page = 0;
  std::vector<int32_t> prefix(shared_pages);
  for (int32_t& p : prefix) p = next_page++;
  std::vector<std::vector<int32_t>> pages(seqs);
  std::vector<int32_t> kv_len(seqs);
  SharedStep out;
  out.shared_len = shared_pages * page_size;
  for (int32_t s = 0; s < seqs; ++s) {
    const bool member = s < members;
    const bool ends_inside = member && (empty_suffixes || rng() % 5 == 0);
    const int32_t suffix_pages =
        ends_inside ? 0 : static_cast<int32_t>(rng() % (max_suffix_pages + 1));
    if (member) pages[s] = prefix;
    for (int32_t i = 0; i < suffix_pages || pages[s].empty(); ++i) pages[s].push_back(next_page++);
    const int32_t n = static_cast<int32_t>(pages[s].size());
    kv_len[s] = ends_inside ? 1 + static_cast<int32_t>(rng() % (shared_pages * page_size))
                            : (n - 1) * page_size + 1 + static_cast<int32_t>(rng() % page_size);
    if (ends_inside) pages[s].resize((kv_len[s] + page_size - 1) / page_size);
    if (member) out.shared_len = std::min(out.shared_len, kv_len[s]);
  }
  // A random permutation of the pool pages, and of the step order.
  std::vector<int32_t> perm(next_page);
  for (int32_t i = 0; i < next_page; ++i) perm[i] = i;
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> order(seqs);
  for (int32_t s = 0; s < seqs; ++s) order[s] = s;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<std::vector<int32_t>> step_pages;
  std::vector<int32_t> step_len;
  for (int32_t i = 0; i < seqs; ++i) {
    std::vector<int32_t> p = pages[order[i]];
    for (int32_t& x : p) x = perm[x];
    step_pages.push_back(std::move(p));
    step_len.push_back(kv_len[order[i]]);
    if (order[i] < members) out.member_seqs.push_back(i);
  }
  out.metadata = decode_step(step_pages, step_len, page_size);
  out.num_pages = next_page;
  return out;
}

}  // namespace kiln::testing
