// StepMetadata: one ragged step's CSR-style graph inputs (FlashInfer layout) from the KV page
// tables.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/kv/page_tables.h"

namespace kiln {

/// One sequence's share of a step: a prefill chunk (many tokens) or a decode (one token).
struct StepSequence {
  SeqId seq = 0;
  int32_t num_new_tokens = 0;
};

/// The step's sequence metadata graph inputs, all int32. T = total new tokens, S = sequences,
/// P = total pages over the step's sequences. Sequence `s` owns query rows
/// [qo_indptr[s], qo_indptr[s+1]) and pages
/// kv_page_indices[kv_page_indptr[s] .. kv_page_indptr[s+1]); its KV length after the step is
/// (npages - 1) * page_size + kv_last_page_len[s].
struct StepMetadata {
  std::vector<int32_t> positions;         ///< [T] absolute position: previous length + i
  std::vector<int32_t> slot_mapping;      ///< [T] page * page_size + offset of the token's K/V row
  std::vector<int32_t> qo_indptr;         ///< [S+1]
  std::vector<int32_t> kv_page_indptr;    ///< [S+1]
  std::vector<int32_t> kv_page_indices;   ///< [P]
  std::vector<int32_t> kv_last_page_len;  ///< [S] in [1, page_size], counting this step's tokens
  int32_t max_kv_len = 0;                 ///< the largest KV length in the step (symbol K)

  int32_t num_tokens() const { return static_cast<int32_t>(positions.size()); }
  int32_t num_sequences() const { return static_cast<int32_t>(kv_last_page_len.size()); }
};

/// Reserves KV slots for every sequence of the step and returns the step's metadata. The
/// reservation is all or nothing across the step: if the pages do not suffice, no sequence
/// changes and the answer is ResourceExhausted (the scheduler then preempts and retries).
/// InvalidArgument for an unknown or repeated sequence or `num_new_tokens < 1` (every
/// sequence in a step yields a logits row, so it needs at least one query token).
absl::StatusOr<StepMetadata> build_step_metadata(KvPageTables& tables,
                                                 absl::Span<const StepSequence> step);

}  // namespace kiln
