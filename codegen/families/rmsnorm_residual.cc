// Family rmsnorm / rmsnorm_residual (see rmsnorm_residual.h).
#include "codegen/families/rmsnorm_residual.h"

#include "absl/strings/str_cat.h"
#include "codegen/kernel_source.h"
#include "ir/ops.h"

namespace kiln {

KernelFamily RmsNormSpec::family() const {
  return residual ? KernelFamily::kRmsNormResidual : KernelFamily::kRmsNorm;
}

std::string RmsNormSpec::key() const {
  std::vector<std::pair<std::string, int64_t>> p = {
      {"h", hidden}, {"vec", row.vec}, {"vpt", row.per_thread}, {"t", row.threads}};
  if (rows > 1) p.push_back({"r", rows});
  return spec_key(family(), dtype, p);
}

absl::Status rmsnorm_layout(const Attributes& attrs, int64_t hidden, DType dtype, RowVectors* row,
                            int64_t* rows) {
  *row = row_vectors(hidden, dtype);
  *rows = 1;
  const int64_t vecs = hidden / row->vec;
  if (attrs.has("norm_threads")) {
    absl::StatusOr<int64_t> t = attrs.get_int("norm_threads");
    if (!t.ok()) return t.status();
    if (*t < 32 || *t > 1024 || *t % 32 != 0) {
      return absl::InvalidArgumentError("rmsnorm norm_threads must be a multiple of 32 in [32, 1024]");
    }
    row->threads = *t;
    row->per_thread = (vecs + *t - 1) / *t;
    if (row->per_thread > 32) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rmsnorm norm_threads = ", *t, " leaves ", row->per_thread,
          " vectors per thread for h = ", hidden, " (at most 32 fit in registers)"));
    }
  }
  if (attrs.has("norm_rows")) {
    absl::StatusOr<int64_t> r = attrs.get_int("norm_rows");
    if (!r.ok()) return r.status();
    if (*r < 1 || *r * row->threads > 1024) {
      return absl::InvalidArgumentError(
          absl::StrCat("rmsnorm norm_rows = ", *r, ": rows x threads per row must be in [1, 1024]"));
    }
    *rows = *r;
  }
  return absl::OkStatus();
}

std::vector<EntryDecl> RmsNormSpec::entry() const {
  if (!residual) {
    return {{"kiln_t*", "y"},
            {"const kiln_t*", "x"},
            {"const kiln_t*", "w"},
            {"float", "eps"},
            {"int", "num_rows"}};
  }
  return {{"kiln_t*", "y"},       {"kiln_t*", "residual_out"},
          {"const kiln_t*", "x"}, {"const kiln_t*", "residual"},
          {"const kiln_t*", "w"}, {"float", "eps"},
          {"int", "num_rows"}};
}

absl::StatusOr<KernelTemplate> RmsNormSpec::kernel_template() const {
  KernelTemplate t{"rmsnorm_residual.cuh", dtype, "", row.threads * rows};
  t.call = absl::StrCat("kiln_k::rmsnorm_residual<kiln_t, ", hidden, ", ", row.vec, ", ",
                        row.per_thread, ", ", row.threads, ", ", rows, ", ",
                        residual ? "true" : "false", ">");
  // Without the residual the template takes null residual pointers.
  if (!residual) t.call_args = "y, nullptr, x, nullptr, w, eps, num_rows";
  return t;
}

absl::Status lower_rmsnorm(const Node& n, LoweringContext& ctx) {
  auto spec = std::make_shared<RmsNormSpec>();
  spec->residual = n.op == OpKind::kRmsNormResidual;
  const Type& x = n.inputs[0]->type;
  spec->dtype = x.dtype;
  absl::StatusOr<int64_t> h = const_dim(x.shape.back(), "hidden size");
  if (!h.ok()) return ctx.unsupported(std::string(h.status().message()));
  if (!kernel_type_name(x.dtype).ok()) return ctx.unsupported("dtype");
  spec->hidden = *h;
  if (absl::Status s = rmsnorm_layout(n.attrs, *h, x.dtype, &spec->row, &spec->rows); !s.ok()) {
    return ctx.unsupported(std::string(s.message()));
  }
  absl::StatusOr<double> eps = n.attrs.get_float("eps");
  if (!eps.ok()) return eps.status();
  // x: [T, h] (any leading dims): one block per row.
  const std::string rows = product_expr(x.shape, 0, x.shape.size() - 1);
  std::vector<BoundParam> args = {{"eps", LaunchArg::floating(*eps)},
                                  {"num_rows", LaunchArg::integer(rows)}};
  if (spec->residual) {
    const RmsNormResidualOp op(n);
    args.push_back({"y", ctx.tensor(op.normed())});
    args.push_back({"x", ctx.tensor(op.x())});
    args.push_back({"residual_out", ctx.tensor(op.sum())});
    args.push_back({"residual", ctx.tensor(op.residual())});
    args.push_back({"w", ctx.tensor(op.weight())});
  } else {
    const RmsNormOp op(n);
    args.push_back({"y", ctx.tensor(op.output())});
    args.push_back({"x", ctx.tensor(op.x())});
    args.push_back({"w", ctx.tensor(op.weight())});
  }
  const int64_t threads = spec->row.threads * spec->rows;
  const std::string grid =
      spec->rows == 1 ? rows : absl::StrCat("cdiv(", rows, ", ", spec->rows, ")");
  return ctx.launch(std::move(spec), rule_1d(grid, threads), std::move(args));
}

}  // namespace kiln
