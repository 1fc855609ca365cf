// One node of a step checked in isolation: the reference executor runs the node alone on the
// very inputs the GPU read (its operands downloaded before the node's first launch), and the
// GPU's results are compared with the reference's. Because every node gets the GPU's own inputs,
// errors do not accumulate along the graph: the first node over its tolerance is the first wrong
// kernel, not merely the first place the drift became visible. `kiln run --check` is built on it
// (runtime/check/checked_backend.h).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "ir/shape.h"
#include "runtime/reference/host_tensor.h"

namespace kiln {

/// Runs `node` (a node of some verified graph) alone on the reference executor: a one-node graph
/// whose inputs are the node's operands. `operands[i]` is operand i's value (KV caches as f32
/// tensors [NP, PS, Hkv, D], written in place by kv_write and flash_attention); operands that are
/// params are read from `params` instead and their entry ignored. `symbols` binds what the
/// operands' lengths cannot (the step's T, S, K, ...). `cascade`: the step's shared-prefix layout
/// (a flash_attention of a decode step then computes cascade attention, as the GPU did), or null.
/// Returns the node's results in order; a kv_write's result is the cache after the write.
absl::StatusOr<std::vector<HostTensor>> run_node_alone(const Graph& graph, const Node& node,
                                                       std::vector<HostTensor> operands,
                                                       const ParamViews& params,
                                                       const SymbolBindings& symbols,
                                                       const CascadeLayout* cascade = nullptr);

/// How far a computed tensor is from the reference.
struct OutputError {
  double max_abs = 0;        ///< max |got - want| over finite pairs
  double max_reference = 0;  ///< max |want|: what relative errors are measured against
  double relative = 0;       ///< max_abs / max_reference; +inf when got is NaN/inf where want is not
};

/// Compares `got` with `want` (same shape and dtype family, else an error naming both shapes).
absl::StatusOr<OutputError> compare_tensors(const HostTensor& got, const HostTensor& want);

/// The relative tolerance for result `result` of `node`, from the lowest-precision float dtype
/// among its float operands and results: a kernel that reads or writes bf16 rounds at 2^-8, so
/// its result may differ from the fp32 reference by about that relative to the tensor's
/// magnitude. fp8e4m3 KV caches are left out of that minimum: the GPU and the reference read
/// the same codes (each node gets the GPU's operands) and write the same codes for the same rows
/// (both quantize with the same f32 operations), so an attention's output is held to its
/// activations' tolerance, which a wrong dequantization (a scale off by a row, a code misread)
/// exceeds. The caches' own results: codes within kFp8CodeTolerance, scales within f32's.
double result_tolerance(const Node& node, size_t result);

/// An fp8e4m3 cache result's tolerance, relative to its largest code's value (448 once any row
/// is written): one e4m3 step in the top binade is 32 / 448 ≈ 0.071, the most a code may move
/// where the two sides' x * (448 / amax) fall on either side of a rounding boundary; a wrong
/// code or layout moves further.
inline constexpr double kFp8CodeTolerance = 0.08;

}  // namespace kiln
