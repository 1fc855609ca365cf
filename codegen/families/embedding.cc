// Family embedding / last_token_rows (see embedding.h).
#include "codegen/families/embedding.h"

#include "absl/strings/str_cat.h"
#include "codegen/kernel_source.h"

namespace kiln {

KernelFamily GatherRowsSpec::family() const {
  return last_token_rows ? KernelFamily::kLastTokenRows : KernelFamily::kEmbedding;
}

std::string GatherRowsSpec::key() const {
  return spec_key(family(), dtype, {{"h", row}, {"vec", vec}});
}

std::vector<EntryDecl> GatherRowsSpec::entry() const {
  return {{"kiln_t*", "out"},
          {"const kiln_t*", last_token_rows ? "hidden" : "table"},
          {"const int*", last_token_rows ? "qo_indptr" : "ids"},
          {"int", "num_out"},
          {"int", "num_rows"}};
}

absl::StatusOr<KernelTemplate> GatherRowsSpec::kernel_template() const {
  KernelTemplate t{"embedding.cuh", dtype, "", 256};
  t.call = absl::StrCat("kiln_k::gather_rows<kiln_t, ", row, ", ", vec, ", ",
                        last_token_rows ? "true" : "false", ">");
  return t;
}

absl::Status lower_gather_rows(const Node& n, LoweringContext& ctx) {
  auto spec = std::make_shared<GatherRowsSpec>();
  spec->last_token_rows = n.op == OpKind::kLastTokenRows;
  const Type& table = n.inputs[0]->type;
  spec->dtype = table.dtype;
  if (!kernel_type_name(table.dtype).ok() || table.dtype == DType::kI32) {
    return ctx.unsupported("gather supports f32/f16/bf16 tables");
  }
  spec->row = 1;
  for (size_t i = 1; i < table.shape.size(); ++i) {
    absl::StatusOr<int64_t> c = const_dim(table.shape[i], "row size");
    if (!c.ok()) return ctx.unsupported(std::string(c.status().message()));
    spec->row *= *c;
  }
  spec->vec = row_vectors(spec->row, table.dtype).vec;
  // One thread per vector of every output row.
  const std::string rows_out = dim_expr(n.outputs[0]->type.shape[0]);
  const std::string grid = absl::StrCat("cdiv(", rows_out, "*", spec->row / spec->vec, ", 256)");
  const bool last = spec->last_token_rows;
  return ctx.launch(std::move(spec), rule_1d(grid, 256),
                    {{"out", ctx.tensor(n.outputs[0])},
                     {last ? "hidden" : "table", ctx.tensor(n.inputs[0])},
                     {last ? "qo_indptr" : "ids", ctx.tensor(n.inputs[1])},
                     {"num_out", LaunchArg::integer(rows_out)},
                     {"num_rows", LaunchArg::integer(dim_expr(table.shape[0]))}});
}

}  // namespace kiln
