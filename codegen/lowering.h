// Lowering of a fused graph to what the runtime executes: kernel launches (KernelSpec + launch
// rule + argument bindings), cuBLASLt GEMM entries, views and constants, in program order.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/kernel_spec.h"
#include "ir/graph.h"

namespace kiln {

/// One argument of a launch. kind: "tensor" (a value's printed name, "%12" / "@embed"),
/// "int" (an integer expression of the runtime symbols), "float" (a literal), "workspace"
/// (a scratch buffer named in LoweredGraph::workspaces), "runtime" (sampling inputs the runtime
/// supplies: temperature, top_k, top_p, uniform, sampled_ids).
struct KernelArg {
  std::string kind;
  std::string value;
};

/// Grid and block as integer expressions of the runtime symbols (T, S, ...), e.g.
/// "cdiv(T*3, 64) + S"; grammar: integers, symbols, + - * ( ), cdiv(a, b), min(a, b), max(a, b).
struct LaunchRule {
  std::array<std::string, 3> grid = {"1", "1", "1"};
  std::array<std::string, 3> block = {"1", "1", "1"};
  /// "" (every step), "prefill" (a step with any sequence of more than one query token) or
  /// "decode" (every sequence has exactly one): the runtime picks per step.
  std::string when;
};

struct KernelLaunch {
  int node = -1;       // index in program order; -1 for runtime-added kernels (sampling)
  std::string kernel;  // KernelSpec::key()
  LaunchRule launch;
  std::vector<KernelArg> args;
};

/// A matmul / gemm node, executed by cuBLASLt: out[M, N] = x[M, K]·w[N, K]ᵀ (+ bias) (+ residual
/// through beta = 1, the residual buffer being the output's initial contents).
struct GemmEntry {
  int node = -1;
  std::string m;  // expression of the symbols ("T", "S")
  int64_t n = 0, k = 0;
  DType a_dtype = DType::kBF16, b_dtype = DType::kBF16, out_dtype = DType::kBF16;
  std::string epilogue = "none";          // none, bias, residual, bias_residual
  std::string a, b, bias, residual, out;  // value names ("" when absent)
};

/// Scratch buffers kernels need beyond the IR's values (split-KV partials).
struct Workspace {
  std::string name;
  std::string bytes;  // expression of the symbols
};

/// Values that alias another (reshape views; in-place KV cache results).
struct Alias {
  std::string value, of;
};

struct Constant {
  std::string value;
  DType dtype = DType::kF32;
  double scalar = 0;
};

struct LoweredGraph {
  std::vector<KernelSpec> kernels;  // unique by key, in order of first use
  std::vector<KernelLaunch> launches;
  std::vector<GemmEntry> gemms;
  std::vector<Workspace> workspaces;
  std::vector<Alias> aliases;
  std::vector<Constant> constants;
};

struct LoweringOptions {
  /// Add the sampling kernel the runtime launches after the graph (logits f32[S, vocab]).
  bool add_sampling = true;
};

/// Lowers every node; a node with no GPU lowering (a primitive op the fusion passes should have
/// removed) is an error naming it.
absl::StatusOr<LoweredGraph> lower_graph(const Graph& graph, const LoweringOptions& options = {});

/// Evaluates a launch-rule expression with the symbols bound (tests and the runtime).
absl::StatusOr<int64_t> eval_launch_expr(
    const std::string& expr, const std::vector<std::pair<std::string, int64_t>>& symbols);

}  // namespace kiln
