// Tests that run a fuse-horizontal or tensor-parallel graph on the ReferenceExecutor directly (not
// through a plan) bind its derived params themselves: each is its parts' checkpoint rows or
// columns, joined, as the runtimes assemble them at load (plan/weight_parts.h).
#pragma once

#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "ir/graph.h"
#include "models/weights.h"
#include "runtime/reference/executor.h"

namespace kiln::testing {

/// The bytes and shape of the concatenation of `parts` (rows or columns of f32 checkpoint
/// tensors), as the runtimes assemble a derived param; false when a source is missing or not f32.
inline bool assemble_parts(const std::vector<ParamPart>& parts, const WeightSet& weights,
                           std::vector<uint8_t>& bytes, std::vector<int64_t>& shape) {
  bytes.clear();
  shape.clear();
  if (parts.empty()) return false;
  std::vector<const Weight*> sources;
  for (const ParamPart& part : parts) {
    const Weight* w = weights.find(part.source);
    if (w == nullptr || w->dtype != DType::kF32 || w->shape.empty()) return false;
    sources.push_back(w);
  }
  if (parts[0].axis == SliceAxis::kRows) {
    for (size_t i = 0; i < parts.size(); ++i) {
      const Weight* w = sources[i];
      const int64_t row = static_cast<int64_t>(w->bytes.size()) / w->shape[0];
      bytes.insert(bytes.end(), w->bytes.begin() + parts[i].begin * row,
                   w->bytes.begin() + parts[i].end * row);
      if (shape.empty()) shape = w->shape, shape[0] = 0;
      shape[0] += parts[i].end - parts[i].begin;
    }
    return true;
  }
  // Columns of [N, K] matrices: row r of every part, then row r + 1.
  const int64_t rows = sources[0]->shape[0];
  shape = {rows, 0};
  for (const ParamPart& part : parts) shape[1] += part.end - part.begin;
  for (int64_t r = 0; r < rows; ++r) {
    for (size_t i = 0; i < parts.size(); ++i) {
      const Weight* w = sources[i];
      if (w->shape.size() != 2 || w->shape[0] != rows) return false;
      const uint8_t* row = w->bytes.data() + r * w->shape[1] * 4;
      bytes.insert(bytes.end(), row + parts[i].begin * 4, row + parts[i].end * 4);
    }
  }
  return true;
}

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
    ASSERT_TRUE(assemble_parts(p->parts, weights, bytes, shape)) << p->name;
    params[p->name] = ParamView{DType::kF32, shape, bytes.data()};
  }
}

/// Rank `rank`'s ParamViews of every param of a tensor-parallel graph `g`: a param every rank
/// holds whole is its checkpoint tensor; a sharded one is that rank's slices (kept in `storage`,
/// which must outlive the views). The checkpoint's tensors are f32.
inline void bind_rank_params(const Graph& g, int rank, const WeightSet& weights, ParamViews& params,
                             std::vector<std::vector<uint8_t>>& storage) {
  storage.reserve(storage.size() + g.params().size());
  for (const Value* p : g.params()) {
    const std::vector<ParamPart>& parts = p->parts_of_rank(rank);
    if (parts.empty()) {
      const Weight* w = weights.find(p->name);
      ASSERT_NE(w, nullptr) << p->name;
      ASSERT_EQ(w->dtype, DType::kF32) << p->name;
      params[p->name] = ParamView{DType::kF32, w->shape, w->bytes.data()};
      continue;
    }
    std::vector<uint8_t>& bytes = storage.emplace_back();
    std::vector<int64_t> shape;
    ASSERT_TRUE(assemble_parts(parts, weights, bytes, shape)) << p->name << " rank " << rank;
    params[p->name] = ParamView{DType::kF32, shape, bytes.data()};
  }
}

}  // namespace kiln::testing
