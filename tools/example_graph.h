// A small built-in graph (RMSNorm + SwiGLU MLP block in primitive ops) for `kiln ir --example`.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace kiln::tools {

absl::StatusOr<std::unique_ptr<Graph>> build_example_graph();

}  // namespace kiln::tools
