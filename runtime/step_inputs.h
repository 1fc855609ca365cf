// StepInputs: everything one ragged step binds to the graph's inputs, typed (the step graph's
// input contract is models/llama_graph.h's build_llama comment). Built by the engine from the
// page tables (runtime/kv/step_metadata.h); read by both backends.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "runtime/kv/cascade_layout.h"
#include "runtime/kv/step_metadata.h"

namespace kiln {

struct StepInputs {
  std::vector<int32_t> tokens;  ///< [T] token ids, sequences concatenated in step order
  StepMetadata metadata;        ///< positions, slot_mapping, CSR page lists, max_kv_len
  /// A decode step's shared prefix (find_shared_prefix on `metadata`), when the engine looks
  /// for one (`--cascade auto`) and finds one: backends then run cascade attention (the prefix
  /// once for every member, then each sequence's suffix) in place of plain paged decode.
  std::optional<CascadeLayout> cascade;

  int32_t num_tokens() const { return static_cast<int32_t>(tokens.size()); }
  int32_t num_sequences() const { return metadata.num_sequences(); }
  /// True when every sequence has exactly one query token (a decode step).
  bool is_decode() const { return num_tokens() == num_sequences(); }
};

/// Whether the engine looks for a shared prefix in each decode step (`--cascade auto|off`).
enum class CascadeMode : uint8_t { kAuto, kOff };

/// The step's cascade layout under `mode`: find_shared_prefix of `metadata` for kAuto (nullopt
/// when no prefix is worth it or the step is not a decode step), nullopt for kOff.
inline std::optional<CascadeLayout> step_cascade(const StepMetadata& metadata, int32_t page_size,
                                                 CascadeMode mode) {
  if (mode == CascadeMode::kOff) return std::nullopt;
  return find_shared_prefix(metadata, page_size);
}

}  // namespace kiln
