// Lowering of a fused graph to what the runtime executes: kernel launches (KernelSpec + launch
// rule + argument bindings), cuBLASLt GEMM entries, views and constants, in program order.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/kernel_spec.h"
#include "ir/graph.h"
#include "plan/plan.h"

namespace kiln {

/// The lowering's result in the plan's own types; `launches[i].kernel` indexes `kernels` (and
/// the parallel `specs`).
struct LoweredGraph {
  std::vector<KernelSpec> specs;    // unique by key, in order of first use
  std::vector<PlanKernel> kernels;  // specs[i]'s key, family and entry signature (no blobs yet)
  std::vector<PlanLaunch> launches;
  std::vector<PlanGemm> gemms;
  std::vector<PlanWorkspace> workspaces;
  std::vector<PlanAlias> aliases;
  std::vector<PlanConstant> constants;
};

struct LoweringOptions {
  /// Add the sampling kernel the runtime launches after the graph (logits f32[S, vocab]).
  bool add_sampling = true;
};

/// Lowers every node; a node with no GPU lowering (a primitive op the fusion passes should have
/// removed) is an error naming it.
absl::StatusOr<LoweredGraph> lower_graph(const Graph& graph, const LoweringOptions& options = {});

}  // namespace kiln
