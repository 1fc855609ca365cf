// The lowering dispatcher (see lowering.h): kernel nodes go to their family's lowering
// (codegen/families/registry.h); GEMMs, constants and views become plan entries here.
#include "codegen/lowering.h"

#include "absl/strings/str_cat.h"
#include "codegen/families/registry.h"
#include "codegen/families/sampling.h"
#include "ir/ops.h"
#include "ir/view.h"
#include "plan/plan_json.h"

namespace kiln {
namespace {

// Whether a matmul / gemm node also gets a GEMV launch for steps with M <= kGemvMaxRows: the
// options pick its shape, the GEMV implements its epilogue and dtypes, and M can be that small.
// The one decision both the GEMM's lowering and a SwiGLU elementwise node it absorbs consult.
bool takes_gemv(const Node& n, const GemvOptions& gemv) {
  const Type& x = n.inputs[0]->type;
  const Type& w = n.inputs[1]->type;
  if (w.rank() != 2 || w.shape[0].is_symbolic() || w.shape[1].is_symbolic()) return false;
  std::optional<GemmOp> gemm;
  if (n.op == OpKind::kGemm && !(gemm = GemmOp::of(&n))) return false;
  const GemmOp::Epilogue ep = gemm ? gemm->epilogue() : GemmOp::Epilogue::kNone;
  std::optional<GemmEpilogue> plan_ep = parse_gemm_epilogue(std::string(GemmOp::epilogue_name(ep)));
  if (!plan_ep || !gemv_supports_epilogue(*plan_ep)) return false;
  // A constant M above the bound never takes the GEMV path.
  bool small_m_possible = false;
  int64_t const_m = 1;
  for (size_t i = 0; i + 1 < x.shape.size(); ++i) {
    if (x.shape[i].is_symbolic()) small_m_possible = true;
    else const_m *= x.shape[i].value;
  }
  small_m_possible = small_m_possible || const_m <= kGemvMaxRows;
  const int64_t nn = w.shape[0].value, kk = w.shape[1].value;
  const DType bias_dtype = gemm && gemm->bias() ? gemm->bias()->type.dtype : x.dtype;
  return small_m_possible && gemv.use_gemv(nn, kk) &&
         !gemv_ineligible(x.dtype, w.dtype, n.outputs[0]->type.dtype, bias_dtype,
                          gemm && gemm->bias() != nullptr, nn, kk);
}

// The steps a GEMM with a GEMV launch runs on cuBLASLt: M > kGemvMaxRows.
StepBound gemm_rows_above_gemv(const Node& gemm) {
  const Shape& x = gemm.inputs[0]->type.shape;
  return {product_expr(x, 0, x.size() - 1), kGemvMaxRows + 1, 0};
}

// matmul / gemm: out[M, N] = x[M, K]·w[N, K]ᵀ (+ bias) (+ residual), run by cuBLASLt; when
// takes_gemv, also by the GEMV kernel for steps with M <= kGemvMaxRows (the two carry
// complementary StepBounds on M, so each step runs exactly one). The GEMV of a SwigluGemm writes
// the SwiGLU result directly, and that of a NormGemm normalizes the norm's input itself (their
// elementwise / rmsnorm nodes then run only when cuBLASLt does).
absl::Status lower_gemm(int index, const Node& n, const GemvOptions& gemv, LoweringContext& ctx) {
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
  for (const Value* operand : n.inputs) {
    if (!ctx.contiguous(operand)) {
      return ctx.unsupported(absl::StrCat(
          "cuBLASLt reads its operands contiguously here, and ", ctx.name(operand),
          " is a strided view (a slice; ir/view.h)"));
    }
  }
  e.a = ctx.name(n.inputs[0]);
  e.b = ctx.name(n.inputs[1]);
  if (gemm && gemm->bias()) e.bias = ctx.name(gemm->bias());
  if (gemm && gemm->residual()) e.residual = ctx.name(gemm->residual());
  e.out = ctx.name(n.outputs[0]);
  const DType bias_dtype = gemm && gemm->bias() ? gemm->bias()->type.dtype : e.a_dtype;
  if (takes_gemv(n, gemv)) {
    GemvFusion fusion;
    if (std::optional<SwigluGemm> sw = match_swiglu_gemm(ctx.graph(), n)) {
      fusion.swiglu_out = ctx.name(sw->elementwise->outputs[0]);
    }
    if (std::optional<NormGemm> ng = match_norm_gemm(ctx.graph(), n)) {
      const RmsNormOp norm(*ng->norm);
      absl::StatusOr<double> eps = ng->norm->attrs.get_float("eps");
      if (!eps.ok()) return eps.status();
      fusion.norm = GemvFusion::Norm{ctx.name(norm.x()), ctx.name(norm.weight()), *eps};
    }
    if (absl::Status s = lower_gemv(e, bias_dtype, ctx, fusion); !s.ok()) return s;
    e.bound = {e.m, kGemvMaxRows + 1, 0};
  }
  ctx.add_gemm(std::move(e));
  return absl::OkStatus();
}

// all_reduce / all_gather: a plan collective the CUDA backend runs through NCCL on the step's
// stream, over each rank's input as `outer` rows of `inner` contiguous elements (all_gather: the
// dims from its axis on, whose rows NCCL gathers rank-major).
absl::Status lower_collective(int index, const Node& n, LoweringContext& ctx) {
  const Value* x = n.inputs[0];
  const Shape& shape = x->type.shape;
  if (!ctx.contiguous(x)) {
    return ctx.unsupported(absl::StrCat("NCCL reads its buffer contiguously, and ", ctx.name(x),
                                        " is a strided view (a slice; ir/view.h)"));
  }
  size_t axis = shape.empty() ? 0 : shape.size() - 1;  // all_reduce: rows of the last dim
  if (n.op == OpKind::kAllGather) {
    int64_t a = n.attrs.int_or("axis", 0);
    if (a < 0) a += static_cast<int64_t>(shape.size());
    axis = static_cast<size_t>(a);
  }
  PlanCollective c;
  c.node = index;
  c.kind = n.op == OpKind::kAllReduce ? CollectiveKind::kAllReduce : CollectiveKind::kAllGather;
  c.dtype = x->type.dtype;
  c.in = ctx.name(x);
  c.out = ctx.name(n.outputs[0]);
  c.outer = product_expr(shape, 0, axis);
  c.inner = 1;
  for (size_t d = axis; d < shape.size(); ++d) {
    absl::StatusOr<int64_t> v = const_dim(shape[d], "the dims a collective moves as a row");
    if (!v.ok()) return ctx.unsupported(std::string(v.status().message()));
    c.inner *= *v;
  }
  ctx.add_collective(std::move(c));
  return absl::OkStatus();
}

absl::Status lower_node(int index, const Node& n, const LoweringOptions& options,
                        LoweringContext& ctx) {
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
    case OpKind::kSlice: {
      // A view inside its base's buffer (plan-memory placed it there); its readers take the
      // row stride (ir/view.h). Nothing runs.
      std::optional<StridedRows> view = strided_rows(*n.outputs[0]);
      if (!view || view->base->kind != ValueKind::kResult) {
        return ctx.unsupported(
            "only a slice that is strided rows of a computed value is a view on the GPU");
      }
      return absl::OkStatus();
    }
    case OpKind::kMatmul:
    case OpKind::kGemm: return lower_gemm(index, n, options.gemv, ctx);
    case OpKind::kFusedElementwise:
      // A SwiGLU or RMSNorm that the GEMV after / before it computes at M <= kGemvMaxRows: its
      // own launch runs only in the cuBLASLt steps.
      if (std::optional<SwigluGemm> sw = match_swiglu_gemm(ctx.graph(), n);
          sw && takes_gemv(*sw->gemm, options.gemv)) {
        ctx.bound_node_launches(gemm_rows_above_gemv(*sw->gemm));
      }
      break;
    case OpKind::kRmsNorm:
      if (std::optional<NormGemm> ng = match_norm_gemm(ctx.graph(), n);
          ng && takes_gemv(*ng->gemm, options.gemv)) {
        ctx.bound_node_launches(gemm_rows_above_gemv(*ng->gemm));
      }
      break;
    case OpKind::kAllReduce:
    case OpKind::kAllGather: return lower_collective(index, n, ctx);
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
    if (absl::Status s = lower_node(i, n, options, ctx); !s.ok()) return s;
  }
  if (options.add_sampling) {
    ctx.set_node(-1, nullptr);
    if (absl::Status s = lower_sampling(graph, ctx); !s.ok()) return s;
  }
  if (options.persistent) {
    if (absl::Status s = add_persistent_decode(out, *options.persistent); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("--persistent: ", s.message()));
    }
  }
  return out;
}

}  // namespace kiln
