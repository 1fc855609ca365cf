// Derived plan weights (PlanWeight::parts): which bytes of which stored weights, in order, make
// one. Both runtimes (reference, CUDA) assemble a derived weight from these ranges at upload, so
// the layout rules live here once.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "plan/plan.h"

namespace kiln {

/// `size` bytes at `offset` within the stored bytes of `source` (a file-referenced or packed
/// weight).
struct WeightByteRange {
  const PlanWeight* source = nullptr;
  uint64_t offset = 0;
  uint64_t size = 0;
};

/// The byte ranges whose concatenation is the derived weight `w` of `plan`. InvalidArgument,
/// naming the weight and the part, when a source is missing or itself derived, its dtype or
/// trailing dims differ from `w`'s, a row range is out of the source's rows or does not cover
/// whole quantization blocks, or the parts' rows do not add up to `w.shape[0]`.
absl::StatusOr<std::vector<WeightByteRange>> weight_byte_ranges(const Plan& plan,
                                                                const PlanWeight& w);

}  // namespace kiln
