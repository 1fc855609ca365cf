// Family rmsnorm / rmsnorm_residual (kernels/rmsnorm_residual.cuh): y = x / rms(x) * w, with the
// residual variant adding `residual` to x first and writing the sum out. One block per row.
#pragma once

#include "codegen/families/family.h"

namespace kiln {

struct RmsNormSpec final : KernelSpec {
  DType dtype = DType::kBF16;
  bool residual = false;  // kRmsNormResidual
  int64_t hidden = 0;     // row length h (a template parameter: it fixes the register layout)
  RowVectors row;

  KernelFamily family() const override;
  std::string key() const override;  // rmsnorm[_residual]_<dt>_h<h>_vec<v>_vpt<n>_t<threads>
  std::vector<EntryDecl> entry() const override;
  absl::StatusOr<std::string> source() const override;
};

/// rmsnorm(x, w) and rmsnorm_residual(x, residual, w): one launch of T rows.
absl::Status lower_rmsnorm(const Node& node, LoweringContext& ctx);

}  // namespace kiln
