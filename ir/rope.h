// Rotary-embedding frequencies shared by rope_table, the fused rope op and GPU codegen, so every
// backend rotates by bit-identical angles.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "ir/attributes.h"

namespace kiln {

/// inv_freq[i] = theta^(-2i/rotary_dim) for i < rotary_dim/2, with HF's "llama3" adjustment when
/// `scaling = "llama3"` (scaling_factor, scaling_low_freq_factor, scaling_high_freq_factor,
/// scaling_original_max_positions). Reads `theta`, `rotary_dim` and the scaling attributes.
absl::StatusOr<std::vector<double>> rope_inv_freq(const Attributes& attrs);

}  // namespace kiln
