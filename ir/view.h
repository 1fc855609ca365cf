// Views: results that are another value's bytes seen differently, so that no kernel copies them.
// A reshape is its input's bytes; a slice is a window of them. Every view kiln keeps is "strided
// rows": the value's first-dim rows are each contiguous, at a fixed distance apart in the bytes
// of the value that owns them (fuse-horizontal's Q/K/V slices of the merged GEMM's [T, N] result
// are rows of their own width, N apart). plan-memory places views inside their base's buffer,
// and a kernel that reads one takes the row stride as a parameter (codegen/families/family.h).
#pragma once

#include <cstdint>
#include <optional>

#include "ir/graph.h"

namespace kiln {

struct StridedRows {
  const Value* base = nullptr;  ///< the value that owns the bytes (not itself a view)
  int64_t offset = 0;           ///< elements from base's first element to this value's
  int64_t row_stride = 0;       ///< elements between consecutive first-dim rows; 0: contiguous
  bool contiguous() const { return row_stride == 0; }
};

/// How `v`'s elements sit in its base's bytes. A value that is not a reshape or slice result is
/// its own base (offset 0, contiguous). nullopt for a slice that no strided-rows layout
/// describes (e.g. a window of the last axis of [T, H, D], or one over symbolic inner dims): the
/// reference backend copies it, the GPU lowering refuses it.
std::optional<StridedRows> strided_rows(const Value& v);

}  // namespace kiln
