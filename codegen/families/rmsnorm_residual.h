// Family rmsnorm / rmsnorm_residual (kernels/rmsnorm_residual.cuh): y = x / rms(x) * w, with the
// residual variant adding `residual` to x first and writing the sum out. `row.threads` threads per
// row, `rows` rows per block. Tuning knobs (node attributes, written by `kiln compile --tune`):
// norm_threads (threads per row, a multiple of 32) and norm_rows (rows per block).
#pragma once

#include "codegen/families/family.h"

namespace kiln {

struct RmsNormSpec final : KernelSpec {
  DType dtype = DType::kBF16;
  bool residual = false;  // kRmsNormResidual
  int64_t hidden = 0;     // row length h (a template parameter: it fixes the register layout)
  RowVectors row;
  int64_t rows = 1;  // rows per block

  KernelFamily family() const override;
  /// rmsnorm[_residual]_<dt>_h<h>_vec<v>_vpt<n>_t<threads>[_r<rows> when > 1]
  std::string key() const override;
  std::vector<EntryDecl> entry() const override;
  absl::StatusOr<KernelTemplate> kernel_template() const override;
};

/// The row layout of an rmsnorm node: row_vectors' default, or the node's norm_threads /
/// norm_rows attributes (an error names an invalid one).
absl::Status rmsnorm_layout(const Attributes& attrs, int64_t hidden, DType dtype, RowVectors* row,
                            int64_t* rows);

/// rmsnorm(x, w) and rmsnorm_residual(x, residual, w): one launch of T rows.
absl::Status lower_rmsnorm(const Node& node, LoweringContext& ctx);

}  // namespace kiln
