// CascadeLayout: the two-level KV layout of a decode step whose sequences share a prefix of
// physical pages (the prefix cache hands requests on one prompt the same pages): the shared
// prefix once, and each sequence's own suffix after it. Cascade attention
// (kernels/cascade_attention.cuh) reads the prefix once per block of query rows instead of once
// per sequence.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "runtime/kv/step_metadata.h"

namespace kiln {

/// When a step is worth the cascade path. The prefix launch and the merge cost a few
/// microseconds; what they save is (members - 1) x prefix tokens of KV reads, so short prefixes
/// and lone sequences stay on plain paged attention.
struct CascadeOptions {
  int32_t min_sequences = 2;        ///< members sharing the prefix
  int32_t min_prefix_tokens = 256;  ///< shared KV tokens
};

/// A decode step's shared prefix: KV positions [0, prefix_len) are the same physical slots for
/// every member sequence, held by `prefix_pages` (ceil(prefix_len / PS) pages; the last may be
/// partly used: the prefix may end mid-page). The suffix of sequence s is KV positions
/// [kv_start[s], kv_len(s)) of its own page list: its pages from kv_start[s] / PS on, the first
/// from offset kv_start[s] % PS; it is empty when kv_start[s] == kv_len(s). Invariant (what the
/// kernels rely on): kv_start[s] == prefix_len > 0 for members, 0 for the others.
struct CascadeLayout {
  int32_t prefix_len = 0;             ///< shared KV tokens
  std::vector<int32_t> prefix_pages;  ///< [ceil(prefix_len / PS)] physical pages
  std::vector<int32_t> prefix_seqs;   ///< [M] member sequences (step indices), ascending
  std::vector<int32_t> kv_start;      ///< [S] first suffix position per sequence

  int32_t num_members() const { return static_cast<int32_t>(prefix_seqs.size()); }
};

/// The cascade layout of a decode step (every sequence one query token), or nullopt when the
/// step should take plain paged attention: not a decode step, or no `options.min_sequences`
/// sequences sharing `options.min_prefix_tokens` tokens. Only the sequences that share pages
/// with the chosen prefix are members; the others keep kv_start 0 and are attended to by the
/// suffix kernel alone, as plain decode would. Among candidate groups (sequences whose page lists
/// start with the same page) and prefix lengths, the one that saves the most KV reads,
/// (members - 1) x prefix_len, wins: one shared prefix per step, the case of many requests on
/// one system prompt; several disjoint shared prefixes in one step take the best one only.
std::optional<CascadeLayout> find_shared_prefix(const StepMetadata& m, int32_t page_size,
                                                const CascadeOptions& options = {});

/// Checks `layout` against the step: member indices in range, ascending and distinct; kv_start
/// consistent with them; prefix_len within every member's KV length; and every member's first
/// ceil(prefix_len / PS) pages equal to prefix_pages. InvalidArgument naming the first violation.
absl::Status check_cascade_layout(const CascadeLayout& layout, const StepMetadata& m,
                                  int32_t page_size);

}  // namespace kiln
