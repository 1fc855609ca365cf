// The IR verifier: SSA (each value defined once, before use), declared types equal inferred types,
// required attributes present, symbols declared, outputs defined. Run after every pass in tests and
// debug builds.
#pragma once

#include "absl/status/status.h"
#include "ir/graph.h"

namespace kiln {

/// OK, or an error naming the offending node as printed ("%12 = rmsnorm(...): ...").
absl::Status verify(const Graph& graph);

}  // namespace kiln
