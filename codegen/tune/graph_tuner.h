// The hook `kiln compile --tune` runs between the pass pipeline and the lowering: it may rewrite
// the tuning attributes of the fused nodes (codegen/tune/tuner.h), which the final IR then shows
// and the lowering reads. An interface here so codegen/ does not link the GPU driver; the GPU
// implementation is codegen/tune/gpu_tuner.h.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace kiln {

class GraphTuner {
 public:
  virtual ~GraphTuner() = default;
  /// Sets the chosen attributes on `graph`'s nodes; returns a report (one line per tuned kernel).
  virtual absl::StatusOr<std::string> tune(Graph& graph) = 0;
};

}  // namespace kiln
