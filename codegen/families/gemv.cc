// Family gemv (see gemv.h).
#include "codegen/families/gemv.h"

#include "absl/strings/str_cat.h"
#include "codegen/kernel_source.h"
#include "ir/expr.h"
#include "ir/ops.h"
#include "ir/view.h"

namespace kiln {

std::string GemvSpec::key() const {
  std::vector<std::string> tags;
  if (bias) tags.push_back("bias");
  if (residual) tags.push_back("res");
  if (swiglu) tags.push_back("swiglu");
  if (prefetch) tags.push_back("pf");
  if (norm) tags.push_back("norm");
  if (out_dtype != dtype) tags.push_back(absl::StrCat("out", dtype_name(out_dtype)));
  if (bias && bias_dtype != dtype) tags.push_back(absl::StrCat("b", dtype_name(bias_dtype)));
  return spec_key(
      family(), dtype,
      {{"n", n}, {"k", k}, {"rt", row_tiles}, {"w", warps}, {"u", unroll}}, tags);
}

std::vector<EntryDecl> GemvSpec::entry() const {
  std::vector<EntryDecl> e = {
      {"kiln_out_t*", "out"}, {"const kiln_t*", "a"}, {"const kiln_t*", "w"}};
  if (bias) e.push_back({"const kiln_bias_t*", "bias"});
  if (residual) e.push_back({"const kiln_out_t*", "residual"});
  e.push_back({"int", "m"});
  if (norm) {
    e.push_back({"const kiln_t*", "norm_w"});
    e.push_back({"float", "eps"});
  }
  return e;
}

absl::StatusOr<KernelTemplate> GemvSpec::kernel_template() const {
  if (std::optional<std::string> why =
          gemv_ineligible(dtype, dtype, out_dtype, bias_dtype, bias, n, k)) {
    return absl::InvalidArgumentError(*why);
  }
  if (swiglu && (row_tiles % 2 != 0 || n % 2 != 0 || bias || residual)) {
    return absl::InvalidArgumentError(
        "the SwiGLU GEMV needs an even row_tiles and weight rows, and no bias or residual");
  }
  absl::StatusOr<std::string> out_t = kernel_type_name(out_dtype);
  absl::StatusOr<std::string> bias_t = kernel_type_name(bias ? bias_dtype : dtype);
  if (!out_t.ok()) return out_t.status();
  if (!bias_t.ok()) return bias_t.status();
  const std::string config =
      absl::StrCat("typedef ", *out_t, " kiln_out_t;\ntypedef ", *bias_t, " kiln_bias_t;\n");
  const std::string call = absl::StrCat(
      "kiln_k::gemv<kiln_t, kiln_out_t, kiln_bias_t, ", n, ", ", k, ", ", row_tiles, ", ", warps,
      ", ", unroll, ", ", bias ? "true" : "false", ", ", residual ? "true" : "false", ", ",
      swiglu ? "true" : "false", ", ", prefetch ? "true" : "false", ", ", norm ? "true" : "false",
      ">");
  KernelTemplate t{"gemv.cuh", dtype, config, threads(), call};
  t.call_args = absl::StrCat("out, a, w, ", bias ? "bias" : "nullptr", ", ",
                             residual ? "residual" : "nullptr", ", m", norm ? ", norm_w, eps" : "");
  t.prefetch_call = absl::StrCat("kiln_k::gemv_prefetch_l2<kiln_t, ", n, ", ", k, ", ", row_tiles,
                                 ", ", swiglu ? "true" : "false", ">");
  t.prefetch_args = "w";
  t.persistent_shared_bytes = warps * 16 * row_tiles * 17 * 4;  // gemv.cuh's `part`
  return t;
}

LaunchRule GemvSpec::rule() const {
  const int64_t features = swiglu ? n / 2 : n, per_block = features_per_block();
  return rule_1d(absl::StrCat((features + per_block - 1) / per_block), threads());
}

std::optional<std::string> gemv_ineligible(DType a, DType b, DType out, DType bias, bool has_bias,
                                           int64_t n, int64_t k) {
  auto half = [](DType d) { return d == DType::kBF16 || d == DType::kF16; };
  if (!half(a) || a != b) {
    return absl::StrCat("the GEMV takes bf16·bf16 or f16·f16, not ", dtype_name(a), "·",
                        dtype_name(b));
  }
  if (!half(out) && out != DType::kF32) {
    return absl::StrCat("the GEMV writes bf16, f16 or f32, not ", dtype_name(out));
  }
  if (has_bias && !half(bias) && bias != DType::kF32) {
    return absl::StrCat("the GEMV reads a bf16, f16 or f32 bias, not ", dtype_name(bias));
  }
  if (n <= 0 || k <= 0) return absl::StrCat("empty weight [", n, ", ", k, "]");
  if (k % 8 != 0) return absl::StrCat("K = ", k, " is not a multiple of 8 (16-byte rows)");
  // Template parameters and 32-bit row indexing inside the kernel.
  if (n > (int64_t{1} << 30) || k > (int64_t{1} << 30)) {
    return absl::StrCat("weight [", n, ", ", k, "] is too large");
  }
  return std::nullopt;
}

bool gemv_supports_epilogue(GemmEpilogue epilogue) {
  switch (epilogue) {
    case GemmEpilogue::kNone:
    case GemmEpilogue::kBias:
    case GemmEpilogue::kResidual:
    case GemmEpilogue::kBiasResidual: return true;
  }
  return false;
}

GemvSpec gemv_spec_for(int64_t n, int64_t k, bool swiglu) {
  GemvSpec s;
  s.n = n;
  s.k = k;
  s.warps = 8;
  s.swiglu = swiglu;
  // Two row tiles halve the activation reads per weight byte; take them when N still gives
  // about two blocks per SM or more (o/qkv/down at 4096 features would get only 128 blocks).
  // SwiGLU needs them in pairs (a gate tile and its up tile).
  s.row_tiles = n >= 8192 || swiglu ? 2 : 1;
  // ~128 bytes of weight loads in flight per lane: unroll x row_tiles x 2 rows x 16 bytes.
  s.unroll = s.row_tiles == 2 ? 2 : 4;
  return s;
}

bool gemv_heuristic(int64_t n, int64_t k) { return n * k < (int64_t{8} << 20); }

bool GemvOptions::use_gemv(int64_t n, int64_t k) const {
  GemvChoice c = default_choice;
  for (const ShapeChoice& s : per_shape) {
    if (s.n == n && s.k == k) {
      c = s.choice;
      break;
    }
  }
  switch (c) {
    case GemvChoice::kHeuristic: return gemv_heuristic(n, k);
    case GemvChoice::kCublas: return false;
    case GemvChoice::kGemv: return true;
  }
  return false;
}

namespace {

// The two slices of a SwiGLU GEMM's result and the elementwise node reading them (see
// match_swiglu_gemm), starting from the GEMM.
std::optional<SwigluGemm> swiglu_after(const Graph& graph, const Node& gemm) {
  if (gemm.op != OpKind::kMatmul && gemm.op != OpKind::kGemm) return std::nullopt;
  if (gemm.op == OpKind::kGemm) {
    std::optional<GemmOp> op = GemmOp::of(&gemm);
    if (!op || op->epilogue() != GemmOp::Epilogue::kNone) return std::nullopt;
  }
  const Value* out = gemm.outputs[0];
  const Type& t = out->type;
  if (t.rank() != 2 || t.shape[1].is_symbolic() || t.shape[1].value % 2 != 0) return std::nullopt;
  const int64_t n = t.shape[1].value, f = n / 2;
  std::vector<Node*> slices = graph.users(out);
  if (slices.size() != 2 || graph.use_count(out) != 2) return std::nullopt;
  const Node* elementwise = nullptr;
  for (const Node* s : slices) {
    if (s->op != OpKind::kSlice) return std::nullopt;
    std::vector<Node*> readers = graph.users(s->outputs[0]);
    if (readers.size() != 1 || graph.use_count(s->outputs[0]) != 1) return std::nullopt;
    if (elementwise != nullptr && readers[0] != elementwise) return std::nullopt;
    elementwise = readers[0];
  }
  if (elementwise->op != OpKind::kFusedElementwise || elementwise->inputs.size() != 2 ||
      elementwise->outputs[0]->type.dtype != t.dtype ||
      !(elementwise->outputs[0]->type.shape == Shape{t.shape[0], Dim::constant(f)})) {
    return std::nullopt;
  }
  // The expression: mul(silu($g), $u) or mul($u, silu($g)), g != u.
  absl::StatusOr<std::string> text = elementwise->attrs.get_string("expr");
  if (!text.ok()) return std::nullopt;
  absl::StatusOr<Expr> expr = Expr::parse(*text);
  if (!expr.ok() || expr->nodes().empty()) return std::nullopt;
  const std::vector<Expr::Node>& e = expr->nodes();
  const Expr::Node& root = e.back();
  if (root.kind != Expr::Kind::kMul) return std::nullopt;
  int gate = -1, up = -1;
  for (int side = 0; side < 2; ++side) {
    const Expr::Node& a = e[root.args[side]];
    const Expr::Node& b = e[root.args[1 - side]];
    if (a.kind == Expr::Kind::kSilu && e[a.args[0]].kind == Expr::Kind::kInput &&
        b.kind == Expr::Kind::kInput) {
      gate = e[a.args[0]].input;
      up = b.input;
    }
  }
  if (gate < 0 || up < 0 || gate == up) return std::nullopt;
  // gate = the first half of every row, up = the second: views F elements apart, rows 2F apart.
  std::optional<StridedRows> g = strided_rows(*elementwise->inputs[gate]);
  std::optional<StridedRows> u = strided_rows(*elementwise->inputs[up]);
  if (!g || !u || g->base != out || u->base != out || g->offset != 0 || u->offset != f ||
      g->row_stride != n || u->row_stride != n) {
    return std::nullopt;
  }
  return SwigluGemm{&gemm, elementwise};
}

}  // namespace

std::optional<SwigluGemm> match_swiglu_gemm(const Graph& graph, const Node& node) {
  if (node.op == OpKind::kFusedElementwise) {
    if (node.inputs.empty() || node.inputs[0]->producer == nullptr ||
        node.inputs[0]->producer->op != OpKind::kSlice) {
      return std::nullopt;
    }
    const Node* gemm = node.inputs[0]->producer->inputs[0]->producer;
    if (gemm == nullptr) return std::nullopt;
    std::optional<SwigluGemm> m = swiglu_after(graph, *gemm);
    if (!m || m->elementwise != &node) return std::nullopt;
    return m;
  }
  return swiglu_after(graph, node);
}

std::optional<NormGemm> match_norm_gemm(const Graph& graph, const Node& node) {
  const Node* norm = &node;
  if (node.op == OpKind::kMatmul || node.op == OpKind::kGemm) {
    norm = node.inputs[0]->producer;
    if (norm == nullptr) return std::nullopt;
  }
  if (norm->op != OpKind::kRmsNorm) return std::nullopt;
  const RmsNormOp op(*norm);
  const Value* y = op.output();
  std::vector<Node*> readers = graph.users(y);
  if (readers.size() != 1 || graph.use_count(y) != 1) return std::nullopt;
  const Node* gemm = readers[0];
  if ((gemm->op != OpKind::kMatmul && gemm->op != OpKind::kGemm) || gemm->inputs[0] != y ||
      gemm->inputs[1] == y) {
    return std::nullopt;
  }
  if (&node != norm && &node != gemm) return std::nullopt;
  const Value* x = op.x();
  if (x->type.dtype != y->type.dtype || op.weight()->type.dtype != y->type.dtype ||
      x->type.rank() != 2 || !(x->type == y->type)) {
    return std::nullopt;
  }
  // x must be live through the GEMM: not an arena value, a graph output, or read after it.
  bool live = x->kind != ValueKind::kResult;
  for (const GraphOutput& o : graph.outputs()) live = live || o.value == x;
  const int at = graph.index_of(gemm);
  for (const Node* r : graph.users(x)) live = live || graph.index_of(r) > at;
  // ... and a value of its own bytes (a view's base could die earlier).
  std::optional<StridedRows> view = strided_rows(*x);
  if (!live || !view || view->base != x) return std::nullopt;
  return NormGemm{norm, gemm};
}

absl::Status lower_gemv(const PlanGemm& g, DType bias_dtype, LoweringContext& ctx,
                        const GemvFusion& fusion) {
  const std::optional<std::string>& swiglu_out = fusion.swiglu_out;
  if (!gemv_supports_epilogue(g.epilogue)) {
    return ctx.unsupported(absl::StrCat("the GEMV has no epilogue ", static_cast<int>(g.epilogue)));
  }
  const bool bias = g.epilogue == GemmEpilogue::kBias || g.epilogue == GemmEpilogue::kBiasResidual;
  const bool residual =
      g.epilogue == GemmEpilogue::kResidual || g.epilogue == GemmEpilogue::kBiasResidual;
  if (std::optional<std::string> why =
          gemv_ineligible(g.a_dtype, g.b_dtype, g.out_dtype, bias_dtype, bias, g.n, g.k)) {
    return ctx.unsupported(*why);
  }
  if (swiglu_out && g.epilogue != GemmEpilogue::kNone) {
    return ctx.unsupported("the SwiGLU GEMV takes no other epilogue");
  }
  auto spec = std::make_shared<GemvSpec>(gemv_spec_for(g.n, g.k, swiglu_out.has_value()));
  spec->dtype = g.a_dtype;
  spec->out_dtype = g.out_dtype;
  spec->bias_dtype = bias ? bias_dtype : g.a_dtype;
  spec->bias = bias;
  spec->residual = residual;
  spec->norm = fusion.norm.has_value();
  LaunchRule rule = spec->rule();
  rule.bound = {g.m, 0, kGemvMaxRows};
  std::vector<BoundParam> args = {{"out", LaunchArg::tensor(swiglu_out ? *swiglu_out : g.out)},
                                  {"a", LaunchArg::tensor(fusion.norm ? fusion.norm->x : g.a)},
                                  {"w", LaunchArg::tensor(g.b)},
                                  {"m", LaunchArg::integer(g.m)}};
  if (bias) args.push_back({"bias", LaunchArg::tensor(g.bias)});
  if (residual) args.push_back({"residual", LaunchArg::tensor(g.residual)});
  if (fusion.norm) {
    args.push_back({"norm_w", LaunchArg::tensor(fusion.norm->weight)});
    args.push_back({"eps", LaunchArg::floating(fusion.norm->eps)});
  }
  return ctx.launch(std::move(spec), std::move(rule), std::move(args));
}

}  // namespace kiln
