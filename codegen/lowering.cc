// The lowering dispatcher (see lowering.h): kernel nodes go to their family's lowering
// (codegen/families/registry.h); GEMMs, constants and views become plan entries here.
#include "codegen/lowering.h"

#include "absl/strings/str_cat.h"
#include "codegen/families/registry.h"
#include "codegen/families/sampling.h"
#include "ir/ops.h"
#include "plan/plan_json.h"

namespace kiln {
namespace {

// matmul / gemm: out[M, N] = x[M, K]·w[N, K]ᵀ (+ bias) (+ residual), run by cuBLASLt.
absl::Status lower_gemm(int index, const Node& n, LoweringContext& ctx) {
  const Type& x = n.inputs[0]->type;
  const Type& w = n.inputs[1]->type;
  PlanGemm e;
  e.node = index;
  e.m = product_expr(x.shape, 0, x.shape.size() - 1);
  absl::StatusOr<int64_t> nn = const_dim(w.shape[0], "N"), kk = const_dim(w.shape[1], "K");
  if (!nn.ok() || !kk.ok()) return ctx.unsupported("weight dims must be constants");
  e.n = *nn;
  e.k = *kk;
  e.a_dtype = x.dtype;
  e.b_dtype = w.dtype;
  e.out_dtype = n.outputs[0]->type.dtype;
  // matmul has no epilogue; a gemm's operands are read through ir/ops.h's GemmOp, the one
  // definition of where bias and residual sit.
  std::optional<GemmOp> gemm;
  if (n.op == OpKind::kGemm) {
    gemm = GemmOp::of(&n);
    if (!gemm) {
      return ctx.unsupported(absl::StrCat("epilogue \"", n.attrs.string_or("epilogue", ""),
                                          "\" is unknown or does not match the operand count"));
    }
  }
  const GemmOp::Epilogue ep = gemm ? gemm->epilogue() : GemmOp::Epilogue::kNone;
  std::optional<GemmEpilogue> plan_ep = parse_gemm_epilogue(std::string(GemmOp::epilogue_name(ep)));
  if (!plan_ep) return ctx.unsupported("unknown epilogue");
  e.epilogue = *plan_ep;
  e.a = ctx.name(n.inputs[0]);
  e.b = ctx.name(n.inputs[1]);
  if (gemm && gemm->bias()) e.bias = ctx.name(gemm->bias());
  if (gemm && gemm->residual()) e.residual = ctx.name(gemm->residual());
  e.out = ctx.name(n.outputs[0]);
  ctx.add_gemm(std::move(e));
  return absl::OkStatus();
}

absl::Status lower_node(int index, const Node& n, LoweringContext& ctx) {
  switch (n.op) {
    case OpKind::kConstant: {
      absl::StatusOr<double> v = n.attrs.get_float("value");
      if (!v.ok()) return v.status();
      ctx.add_constant({ctx.name(n.outputs[0]), n.outputs[0]->type.dtype, *v});
      return absl::OkStatus();
    }
    case OpKind::kReshape:
      ctx.add_alias({ctx.name(n.outputs[0]), ctx.name(n.inputs[0])});
      return absl::OkStatus();
    case OpKind::kMatmul:
    case OpKind::kGemm: return lower_gemm(index, n, ctx);
    default: break;
  }
  if (const FamilyLowering* family = find_family_lowering(n.op)) return family->lower(n, ctx);
  return ctx.unsupported(
      "this primitive op only runs on the CPU reference backend; the fusion passes (rope, "
      "rmsnorm-residual, attention, elementwise) remove it");
}

}  // namespace

absl::StatusOr<LoweredGraph> lower_graph(const Graph& graph, const LoweringOptions& options) {
  LoweredGraph out;
  LoweringContext ctx(graph, out);
  for (int i = 0; i < graph.num_nodes(); ++i) {
    const Node& n = *graph.nodes()[i];
    ctx.set_node(i, &n);
    if (absl::Status s = lower_node(i, n, ctx); !s.ok()) return s;
  }
  if (options.add_sampling) {
    ctx.set_node(-1, nullptr);
    if (absl::Status s = lower_sampling(graph, ctx); !s.ok()) return s;
  }
  return out;
}

}  // namespace kiln
