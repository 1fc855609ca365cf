// Lowering of a fused graph to what the runtime executes, in the plan's types: kernel launches
// (each family's spec, launch rule and bound arguments; codegen/families/), cuBLASLt GEMM
// entries, views and constants, in program order. This file only dispatches: every kernel family
// is defined once in codegen/families/.
#pragma once

#include "absl/status/statusor.h"
#include "codegen/families/family.h"
#include "codegen/families/gemv.h"
#include "codegen/families/persistent_decode.h"
#include "ir/graph.h"

namespace kiln {

struct LoweringOptions {
  /// Add the sampling kernel the runtime launches after the graph (logits f32[S, vocab]).
  bool add_sampling = true;
  /// Which matmuls also get a GEMV launch for steps with M <= kGemvMaxRows (codegen/families/
  /// gemv.h); their PlanGemm is then bounded to M > kGemvMaxRows.
  GemvOptions gemv;
  /// Add the persistent decode kernel (codegen/families/persistent_decode.h) for decode steps of
  /// at most this many sequences; nullopt: none.
  std::optional<PersistentOptions> persistent;
};

/// Lowers every node; a node with no GPU lowering (a primitive op the fusion passes should have
/// removed) is an error naming it.
absl::StatusOr<LoweredGraph> lower_graph(const Graph& graph, const LoweringOptions& options = {});

}  // namespace kiln
