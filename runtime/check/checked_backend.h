// CheckedBackend: `kiln run --check`. It is a Backend, so the engine drives it like any other;
// for the first steps it runs the GPU step node by node (CudaBackend::run_step_observed) and
// checks every node that launched work (fused kernels and GEMMs alike) against the reference
// executor running the same op on the same inputs (runtime/check/node_check.h). Later steps run
// at full speed. The reference's IR and weights may come from another plan (`--check-against`):
// a plan compiled from edited IR is checked against the plan it was edited from, node by node.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "runtime/backend.h"
#include "runtime/check/node_check.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/reference/host_tensor.h"

namespace kiln {

/// One node result of one checked step.
struct NodeCheck {
  int step = 0;            ///< index of the step among the checked ones (0 = the first prefill)
  bool decode = false;     ///< the step was a decode step
  int node = 0;            ///< index in the plan's IR
  std::string op;          ///< "rmsnorm_residual"
  std::string kernel;      ///< the plan's kernel keys for the node, or "cublasLt"
  std::string value;       ///< the result checked ("%12")
  /// Nodes with no launch of their own in the step whose work this node's launch did (a GEMV's
  /// RMSNorm prologue): their results were never written, so the reference's stood in for them,
  /// and an error of theirs shows up here. "node 1 rmsnorm", in node order.
  std::vector<std::string> folded;
  OutputError error;
  double tolerance = 0;
  bool ok() const { return error.relative <= tolerance; }
};

class CheckedBackend : public Backend {
 public:
  /// Checks the first `steps` steps run on `gpu` against `reference` (an IR with the same nodes
  /// as the GPU plan's, node for node: the same plan's, or the one it was edited from) with the
  /// weights `params`. All three must outlive this backend. InvalidArgument when the two IRs'
  /// nodes differ in count or op.
  static absl::StatusOr<std::unique_ptr<CheckedBackend>> create(CudaBackend& gpu,
                                                                const Graph& reference,
                                                                const ParamViews& params,
                                                                int steps);

  std::string name() const override { return gpu_.name(); }
  const Plan& plan() const override { return gpu_.plan(); }
  int64_t kv_pages() const override { return gpu_.kv_pages(); }
  std::string load_report() const override { return gpu_.load_report(); }
  absl::Status copy_kv_pages(absl::Span<const PageCopy> copies) override {
    return gpu_.copy_kv_pages(copies);
  }
  absl::StatusOr<StepResult> run_step(const StepRequest& step) override;

  /// Every checked node result, in execution order.
  const std::vector<NodeCheck>& checks() const { return checks_; }
  /// The first result over its tolerance, or null when every node agreed.
  const NodeCheck* first_divergence() const;

 private:
  class Observer;
  CheckedBackend(CudaBackend& gpu, const Graph& reference, const ParamViews& params, int steps);

  CudaBackend& gpu_;
  const Graph& reference_;
  const ParamViews& params_;
  int steps_ = 0;
  int steps_checked_ = 0;
  std::vector<std::string> kernel_of_node_;  // by node index
  std::vector<NodeCheck> checks_;
};

/// The per-node table `kiln run --check` prints, then a line naming the first divergent op (or
/// saying every op agreed).
std::string format_checks(const std::vector<NodeCheck>& checks);

}  // namespace kiln
