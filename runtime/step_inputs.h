// StepInputs: everything one ragged step binds to the graph's inputs, typed (the step graph's
// input contract is models/llama_graph.h's build_llama comment). Built by the engine from the
// page tables (runtime/kv/step_metadata.h); read by both backends.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/kv/step_metadata.h"

namespace kiln {

struct StepInputs {
  std::vector<int32_t> tokens;  ///< [T] token ids, sequences concatenated in step order
  StepMetadata metadata;        ///< positions, slot_mapping, CSR page lists, max_kv_len

  int32_t num_tokens() const { return static_cast<int32_t>(tokens.size()); }
  int32_t num_sequences() const { return metadata.num_sequences(); }
  /// True when every sequence has exactly one query token (a decode step).
  bool is_decode() const { return num_tokens() == num_sequences(); }
};

}  // namespace kiln
