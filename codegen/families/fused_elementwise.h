// Family fused_elementwise (generated whole, no kernels/ template): one thread per output
// element evaluating the node's expression DAG (ir/expr.h) in fp32, with numpy broadcasting by
// index arithmetic. Also lowers the primitive elementwise ops as one-op expressions.
#pragma once

#include <string>
#include <vector>

#include "codegen/families/family.h"

namespace kiln {

struct FusedElementwiseSpec final : KernelSpec {
  DType dtype = DType::kBF16;  // the output's
  std::string expr;            // "mul($0, rsqrt($1))"
  std::vector<DType> input_dtypes;
  /// Per input, its shape aligned to the output's rank: '1' (broadcast) or '*' (the output's
  /// extent) per axis.
  std::vector<std::string> input_patterns;
  /// Per input, the elements between its first-axis rows when it is a view (a slice of a merged
  /// GEMM's result; ir/view.h), else 0 (contiguous).
  std::vector<int64_t> input_row_strides;
  std::vector<std::string> output_dims;  // "576" (baked) or a symbol (a runtime parameter)

  KernelFamily family() const override { return KernelFamily::kFusedElementwise; }
  /// fused_elementwise_<dt>_n<inputs>_r<rank>_h<hash of expr, input types and patterns, dims>
  std::string key() const override;
  std::vector<EntryDecl> entry() const override;
  absl::StatusOr<KernelTemplate> kernel_template() const override;
};

/// fused_elementwise and the primitive elementwise ops (add, sub, mul, div, neg, exp, rsqrt,
/// silu, cast).
absl::Status lower_elementwise(const Node& node, LoweringContext& ctx);

}  // namespace kiln
