// Family embedding / last_token_rows (kernels/embedding.cuh): rows of a table gathered by index —
// table[ids] for the token embedding, hidden[qo_indptr[s+1]-1] for each sequence's last token.
#pragma once

#include "codegen/families/family.h"

namespace kiln {

struct GatherRowsSpec final : KernelSpec {
  DType dtype = DType::kBF16;
  bool last_token_rows = false;  // kLastTokenRows (indices from qo_indptr) instead of kEmbedding
  int64_t row = 0;               // elements per row
  int64_t vec = 1;               // elements per vector

  KernelFamily family() const override;
  std::string key() const override;  // embedding_<dt>_h<row>_vec<v>
  std::vector<EntryDecl> entry() const override;
  absl::StatusOr<KernelTemplate> kernel_template() const override;
};

/// gather(table, ids) and last_token_rows(hidden, qo_indptr).
absl::Status lower_gather_rows(const Node& node, LoweringContext& ctx);

}  // namespace kiln
