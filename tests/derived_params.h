// Tests that run a fuse-horizontal graph on the ReferenceExecutor directly (not through a plan)
// bind its derived params themselves: each is its parts' checkpoint rows, stacked, as the
// runtimes assemble them at load (plan/weight_parts.h).
#pragma once

#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "ir/graph.h"
#include "models/weights.h"
#include "runtime/reference/executor.h"

namespace kiln::testing {

/// The ParamViews of every param of `g`: a plain one over its checkpoint tensor, a derived one
/// over its stacked rows kept in `storage` (which must outlive the views). The checkpoint's
/// tensors are f32.
inline void bind_params(const Graph& g, const WeightSet& weights, ParamViews& params,
                        std::vector<std::vector<uint8_t>>& storage) {
  for (const Value* p : g.params()) {
    if (!p->parts.empty()) continue;
    const Weight* w = weights.find(p->name);
    ASSERT_NE(w, nullptr) << p->name;
    ASSERT_EQ(w->dtype, DType::kF32) << p->name;
    params[p->name] = ParamView{DType::kF32, w->shape, w->bytes.data()};
  }
  storage.reserve(storage.size() + g.params().size());  // the views keep pointing at their bytes
  for (const Value* p : g.params()) {
    if (p->parts.empty()) continue;
    std::vector<uint8_t>& bytes = storage.emplace_back();
    std::vector<int64_t> shape;
    for (const ParamPart& part : p->parts) {
      const Weight* w = weights.find(part.source);
      ASSERT_NE(w, nullptr) << part.source;
      ASSERT_EQ(w->dtype, DType::kF32) << part.source;
      const int64_t row = static_cast<int64_t>(w->bytes.size()) / w->shape[0];
      bytes.insert(bytes.end(), w->bytes.begin() + part.row_begin * row,
                   w->bytes.begin() + part.row_end * row);
      if (shape.empty()) shape = w->shape, shape[0] = 0;
      shape[0] += part.row_end - part.row_begin;
    }
    params[p->name] = ParamView{DType::kF32, shape, bytes.data()};
  }
}

}  // namespace kiln::testing
