// Family rmsnorm / rmsnorm_residual (see rmsnorm_residual.h).
#include "codegen/families/rmsnorm_residual.h"

#include "absl/strings/str_cat.h"
#include "codegen/kernel_source.h"

namespace kiln {

KernelFamily RmsNormSpec::family() const {
  return residual ? KernelFamily::kRmsNormResidual : KernelFamily::kRmsNorm;
}

std::string RmsNormSpec::key() const {
  return spec_key(family(), dtype,
                  {{"h", hidden}, {"vec", row.vec}, {"vpt", row.per_thread}, {"t", row.threads}});
}

std::vector<EntryDecl> RmsNormSpec::entry() const {
  if (!residual) {
    return {{"kiln_t*", "y"}, {"const kiln_t*", "x"}, {"const kiln_t*", "w"}, {"float", "eps"}};
  }
  return {{"kiln_t*", "y"},       {"kiln_t*", "residual_out"},
          {"const kiln_t*", "x"}, {"const kiln_t*", "residual"},
          {"const kiln_t*", "w"}, {"float", "eps"}};
}

absl::StatusOr<std::string> RmsNormSpec::source() const {
  const std::string call =
      absl::StrCat("kiln_k::rmsnorm_residual<kiln_t, ", hidden, ", ", row.vec, ", ", row.per_thread,
                   ", ", row.threads, ", ", residual ? "true" : "false", ">");
  // Without the residual the template takes null residual pointers.
  return instantiate(*this, "rmsnorm_residual.cuh", dtype, "", row.threads, call,
                     residual ? "" : "y, nullptr, x, nullptr, w, eps");
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
  spec->row = row_vectors(*h, x.dtype);
  absl::StatusOr<double> eps = n.attrs.get_float("eps");
  if (!eps.ok()) return eps.status();
  // x: [T, h] (any leading dims): one block per row.
  std::vector<BoundParam> args = {{"y", ctx.tensor(n.outputs[0])},
                                  {"x", ctx.tensor(n.inputs[0])},
                                  {"eps", LaunchArg::floating(*eps)}};
  if (spec->residual) {
    args.push_back({"residual_out", ctx.tensor(n.outputs[1])});
    args.push_back({"residual", ctx.tensor(n.inputs[1])});
    args.push_back({"w", ctx.tensor(n.inputs[2])});
  } else {
    args.push_back({"w", ctx.tensor(n.inputs[1])});
  }
  const int64_t threads = spec->row.threads;
  return ctx.launch(std::move(spec), rule_1d(product_expr(x.shape, 0, x.shape.size() - 1), threads),
                    std::move(args));
}

}  // namespace kiln
