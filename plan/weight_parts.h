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

/// The byte ranges whose concatenation is the derived weight `w` of `plan`. Row parts are one
/// range each, a run of the checkpoint's bytes. Column parts of a row-major matrix are strided:
/// one range per row and part, in row-major order of `w` (row 0 of every part, then row 1, ...),
/// which the runtimes copy together at load. InvalidArgument, naming the weight and the part,
/// when a source is missing or itself derived, its dtype differs from `w`'s, its other dims
/// differ from `w`'s, a range is out of the source or does not cover whole quantization blocks,
/// the parts mix rows and columns, or they do not add up to `w`'s shape.
absl::StatusOr<std::vector<WeightByteRange>> weight_byte_ranges(const Plan& plan,
                                                                const PlanWeight& w);

}  // namespace kiln
