// Node-by-node lowering to kernel launches and GEMM entries (see lowering.h).
#include "codegen/lowering.h"

#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "codegen/kernel_source.h"
#include "ir/printer.h"
#include "ir/rope.h"
#include "plan/plan_json.h"

namespace kiln {
namespace {

KernelSpec make_spec(KernelFamily family, DType dtype) {
  KernelSpec s;
  s.family = family;
  s.dtype = dtype;
  return s;
}

std::string dim_expr(const Dim& d) {
  if (!d.is_symbolic()) return absl::StrCat(d.value);
  if (d.value == 0) return d.symbol;
  return absl::StrCat("(", d.symbol, d.value > 0 ? "+" : "", d.value, ")");
}

// Product of dims [begin, end) as an expression, constants folded: "T*9".
std::string product_expr(const Shape& s, size_t begin, size_t end) {
  int64_t c = 1;
  std::vector<std::string> syms;
  for (size_t i = begin; i < end && i < s.size(); ++i) {
    if (s[i].is_symbolic()) {
      syms.push_back(dim_expr(s[i]));
    } else {
      c *= s[i].value;
    }
  }
  if (c != 1 || syms.empty()) syms.push_back(absl::StrCat(c));
  return absl::StrJoin(syms, "*");
}

absl::Status unsupported(const Node& node, const ValueNames& names, const std::string& why) {
  return absl::UnimplementedError(
      absl::StrCat("no GPU lowering for `", print_node(node, names), "`: ", why));
}

// Flash-decoding's split policy (see Lowerer::flash_attention).
constexpr int64_t kMaxSplitKv = 32;
// About 4 blocks per SM of a 132-SM H100/H200. Measured on the H200 (bench/attention_bench.py,
// Llama-3-8B shapes): targets of 264 and 1056 blocks, and a fixed 8 splits, were each best for one
// of batch 1 / 16 / 64 and within ~15% elsewhere; this sits between them.
constexpr int64_t kDecodeTargetBlocks = 4 * 132;

absl::StatusOr<int64_t> const_dim(const Dim& d, const char* what) {
  if (d.is_symbolic()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " must be a constant, got ", d.symbol));
  }
  return d.value;
}

// The kernel takes fp32 inverse frequencies, computed once by the shared ir/rope.h (in double).
absl::StatusOr<std::vector<float>> rope_inv_freq_f32(const Attributes& a) {
  absl::StatusOr<std::vector<double>> f = rope_inv_freq(a);
  if (!f.ok()) return f.status();
  return std::vector<float>(f->begin(), f->end());
}

// Threads and vectors for a row of h elements (16-byte vectors when the row allows).
void row_layout(int64_t h, DType dtype, KernelSpec& spec) {
  const int64_t elem = dtype == DType::kF32 ? 4 : 2;
  int64_t vec = 16 / elem;
  while (vec > 1 && h % vec != 0) vec /= 2;
  const int64_t vecs = h / vec;
  const int64_t threads = std::min<int64_t>(256, (vecs + 31) / 32 * 32);
  spec.params = {{"h", h}, {"vec", vec}, {"vpt", (vecs + threads - 1) / threads}, {"t", threads}};
}

class Lowerer {
 public:
  Lowerer(const Graph& g, LoweredGraph& out) : g_(g), names_(g), out_(out) {}

  std::string name(const Value* v) const { return names_(v); }
  LaunchArg tensor(const Value* v) const { return LaunchArg::tensor(name(v)); }
  static LaunchArg integer(const std::string& e) { return LaunchArg::integer(e); }
  static LaunchArg real(double v) { return LaunchArg::floating(v); }

  absl::StatusOr<int> use(const KernelSpec& spec) {
    auto [it, added] = seen_.emplace(spec.key(), static_cast<int>(out_.kernels.size()));
    if (added) {
      absl::StatusOr<std::vector<EntryParam>> params = entry_params(spec);
      if (!params.ok()) return params.status();
      out_.specs.push_back(spec);
      out_.kernels.push_back({.key = spec.key(), .family = spec.family, .params = *params});
    }
    return it->second;
  }
  void launch(int node, const KernelSpec& spec, LaunchRule rule, std::vector<LaunchArg> args) {
    absl::StatusOr<int> k = use(spec);
    if (!k.ok()) {
      if (error_.ok()) error_ = k.status();
      return;
    }
    out_.launches.push_back({node, *k, std::move(rule), std::move(args)});
  }
  const absl::Status& error() const { return error_; }
  static LaunchRule rule1d(const std::string& grid, int64_t block,
                           StepKind when = StepKind::kAlways) {
    LaunchRule r;
    r.grid = {grid, "1", "1"};
    r.block = {absl::StrCat(block), "1", "1"};
    r.when = when;
    return r;
  }

  absl::Status lower(int index, const Node& n);

 private:
  absl::Status attention(int index, const Node& n);
  absl::Status elementwise(int index, const Node& n, const std::string& expr, DType out_dtype);

  const Graph& g_;
  ValueNames names_;
  LoweredGraph& out_;
  std::map<std::string, int> seen_;
  absl::Status error_;
};

absl::Status Lowerer::attention(int index, const Node& n) {
  const Type& q = n.inputs[0]->type;
  const Type& cache = n.inputs[3]->type;
  const DType dt = q.dtype;
  if (dt != DType::kBF16 && dt != DType::kF16) {
    return unsupported(n, names_,
                       "flash_attention kernels use bf16/f16 tensor cores (compile the "
                       "model with --dtype bf16 or f16)");
  }
  if (cache.dtype != dt) return unsupported(n, names_, "KV cache dtype differs from q");
  absl::StatusOr<int64_t> hq = const_dim(q.shape[1], "query heads");
  absl::StatusOr<int64_t> hkv = const_dim(n.inputs[1]->type.shape[1], "KV heads");
  absl::StatusOr<int64_t> d = const_dim(q.shape[2], "head_dim");
  absl::StatusOr<int64_t> ps = const_dim(cache.shape[1], "page size");
  for (const auto* s : {&hq, &hkv, &d, &ps}) {
    if (!s->ok()) return unsupported(n, names_, std::string(s->status().message()));
  }
  if (*d % 16 != 0 || *d > 256)
    return unsupported(n, names_, "head_dim must be a multiple of 16, <= 256");
  const int64_t g = *hq / *hkv;
  if (g > 16) return unsupported(n, names_, "GQA groups larger than 16 are not supported");
  absl::StatusOr<double> scale = n.attrs.get_float("scale");
  if (!scale.ok()) return scale.status();
  // Tuning knobs (attributes the autotuner fills; DESIGN.md), with defaults that fit 48 KB of
  // static shared memory up to head_dim 128.
  const int64_t warps = n.attrs.int_or("warps", 4);
  const int64_t tile_q = n.attrs.int_or("tile_q", 16 * warps);
  const int64_t tile_kv = n.attrs.int_or("tile_kv", *d > 128 ? 32 : 64);
  // split_kv: a fixed count when the attribute is set; otherwise chosen per step from the launch
  // symbols so the decode grid fills the GPU (kDecodeTargetBlocks) while each split keeps at least
  // 256 KV positions (8 KV heads: batch 1 at 32k gets 32 splits, batch 64 at 4k gets 2). Workspaces
  // are sized for the largest count.
  const bool fixed_split = n.attrs.has("split_kv");
  const int64_t max_split = fixed_split ? n.attrs.int_or("split_kv", 8) : kMaxSplitKv;
  if (max_split < 1 || max_split > 256)
    return unsupported(n, names_, "split_kv must be in [1, 256]");
  if (tile_q != 16 * warps || tile_kv % 16 != 0 || tile_q > tile_kv) {
    return unsupported(n, names_, "needs tile_q == 16 * warps <= tile_kv, tile_kv % 16 == 0");
  }
  const std::string T = dim_expr(q.shape[0]);
  const std::string hkv_s = absl::StrCat(*hkv), hq_s = absl::StrCat(*hq);

  KernelSpec append = make_spec(KernelFamily::kKvAppend, dt);
  append.params = {{"d", *d}};
  const int64_t chunks = *d * 2 / 16;
  launch(index, append, rule1d(absl::StrCat("cdiv(", T, "*", *hkv * chunks, ", 256)"), 256),
         {tensor(n.inputs[3]), tensor(n.inputs[4]), tensor(n.inputs[1]), tensor(n.inputs[2]),
          tensor(n.inputs[6]), integer(T), integer(hkv_s)});
  out_.aliases.push_back({name(n.outputs[1]), name(n.inputs[3])});
  out_.aliases.push_back({name(n.outputs[2]), name(n.inputs[4])});

  std::vector<LaunchArg> meta = {
      tensor(n.inputs[5]), tensor(n.inputs[7]),        tensor(n.inputs[8]),
      tensor(n.inputs[9]), tensor(n.inputs[10]),       integer("S"),
      integer(hkv_s),      integer(absl::StrCat(*ps)), real(*scale)};
  KernelSpec prefill = make_spec(KernelFamily::kFlashAttentionPrefill, dt);
  prefill.params = {{"d", *d}, {"g", g}, {"q", tile_q}, {"kv", tile_kv}, {"w", warps}};
  LaunchRule pr;
  pr.grid = {absl::StrCat("cdiv(", T, "*", g, ", ", tile_q, ") + S"), hkv_s, "1"};
  pr.block = {absl::StrCat(32 * warps), "1", "1"};
  pr.when = StepKind::kPrefill;
  std::vector<LaunchArg> args = {tensor(n.outputs[0]), tensor(n.inputs[0]), tensor(n.inputs[3]),
                                 tensor(n.inputs[4])};
  args.insert(args.end(), meta.begin(), meta.end());
  launch(index, prefill, pr, args);

  // Flash-decoding: split_kv partials + LSE merge. Workspaces are per node but sized alike, so
  // the runtime may share them across layers.
  const std::string ws = absl::StrCat("attn_partial_", index),
                    wl = absl::StrCat("attn_lse_", index);
  out_.workspaces.push_back({ws, absl::StrCat(max_split, "*S*", *hq * *d * 4)});
  out_.workspaces.push_back({wl, absl::StrCat(max_split, "*S*", *hq * 4)});
  const std::string split =
      fixed_split ? absl::StrCat(max_split)
                  : absl::StrCat("min(", max_split, ", max(1, min(cdiv(K, 256), cdiv(",
                                 kDecodeTargetBlocks, ", S*", *hkv, "))))");
  KernelSpec decode = make_spec(KernelFamily::kFlashAttentionDecode, dt);
  decode.params = {{"d", *d}, {"g", g}, {"kv", 16}, {"w", 4}};
  LaunchRule dr;
  dr.grid = {"S", hkv_s, split};
  dr.block = {"128", "1", "1"};
  dr.when = StepKind::kDecode;
  args = {LaunchArg::workspace(ws), LaunchArg::workspace(wl), tensor(n.inputs[0]),
          tensor(n.inputs[3]), tensor(n.inputs[4])};
  args.insert(args.end(), meta.begin(), meta.end());
  launch(index, decode, dr, args);
  KernelSpec merge = make_spec(KernelFamily::kFlashAttentionMerge, dt);
  merge.params = {{"d", *d}};
  LaunchRule mr;
  mr.grid = {"S", hq_s, "1"};
  mr.block = {absl::StrCat(*d), "1", "1"};
  mr.when = StepKind::kDecode;
  launch(index, merge, mr,
         {tensor(n.outputs[0]), LaunchArg::workspace(ws), LaunchArg::workspace(wl),
          tensor(n.inputs[7]), integer("S"), integer(hq_s), integer(split)});
  return absl::OkStatus();
}

absl::Status Lowerer::elementwise(int index, const Node& n, const std::string& expr,
                                  DType out_dtype) {
  const Shape& os = n.outputs[0]->type.shape;
  const size_t rank = os.size();
  KernelSpec spec = make_spec(KernelFamily::kFusedElementwise, out_dtype);
  spec.expr = expr;
  std::vector<LaunchArg> args = {tensor(n.outputs[0])};
  for (const Value* in : n.inputs) {
    const Shape& s = in->type.shape;
    std::string pattern(rank, '1');
    for (size_t a = 0; a < s.size(); ++a) {
      const size_t oa = rank - s.size() + a;
      if (!(s[a] == Dim::constant(1)) || os[oa] == Dim::constant(1)) pattern[oa] = '*';
    }
    spec.input_dtypes.push_back(in->type.dtype);
    spec.input_patterns.push_back(pattern);
    args.push_back(tensor(in));
  }
  for (const Dim& d : os)
    spec.output_dims.push_back(d.is_symbolic() ? d.symbol : absl::StrCat(d.value));
  spec.params = {{"n", static_cast<int64_t>(n.inputs.size())}, {"r", static_cast<int64_t>(rank)}};
  std::string payload = expr;
  for (size_t i = 0; i < n.inputs.size(); ++i) {
    absl::StrAppend(&payload, "|", dtype_name(spec.input_dtypes[i]), ":", spec.input_patterns[i]);
  }
  absl::StrAppend(&payload, "|", absl::StrJoin(spec.output_dims, ","));
  spec.payload = payload;
  const std::string total = product_expr(os, 0, rank);
  args.push_back(integer(total));
  for (size_t a = 0; a < rank; ++a) {
    if (os[a].is_symbolic()) args.push_back(integer(dim_expr(os[a])));
  }
  launch(index, spec, rule1d(absl::StrCat("cdiv(", total, ", 256)"), 256), args);
  return absl::OkStatus();
}

absl::Status Lowerer::lower(int index, const Node& n) {
  auto binary = [&](const char* op) { return absl::StrCat(op, "($0, $1)"); };
  switch (n.op) {
    case OpKind::kConstant: {
      absl::StatusOr<double> v = n.attrs.get_float("value");
      if (!v.ok()) return v.status();
      out_.constants.push_back({name(n.outputs[0]), n.outputs[0]->type.dtype, *v});
      return absl::OkStatus();
    }
    case OpKind::kReshape:
      out_.aliases.push_back({name(n.outputs[0]), name(n.inputs[0])});
      return absl::OkStatus();
    case OpKind::kGather:
    case OpKind::kLastTokenRows: {
      const bool last = n.op == OpKind::kLastTokenRows;
      const Type& table = n.inputs[0]->type;
      const DType dt = table.dtype;
      int64_t h = 1;
      for (size_t i = 1; i < table.shape.size(); ++i) {
        absl::StatusOr<int64_t> c = const_dim(table.shape[i], "row size");
        if (!c.ok()) return unsupported(n, names_, std::string(c.status().message()));
        h *= *c;
      }
      if (!kernel_type_name(dt).ok() || dt == DType::kI32) {
        return unsupported(n, names_, "gather supports f32/f16/bf16 tables");
      }
      KernelSpec spec =
          make_spec(last ? KernelFamily::kLastTokenRows : KernelFamily::kEmbedding, dt);
      row_layout(h, dt, spec);
      spec.params.resize(2);  // h, vec
      const std::string rows_out = dim_expr(n.outputs[0]->type.shape[0]);
      const std::string rows_in = dim_expr(table.shape[0]);
      launch(index, spec,
             rule1d(absl::StrCat("cdiv(", rows_out, "*", h / spec.param("vec"), ", 256)"), 256),
             {tensor(n.outputs[0]), tensor(n.inputs[0]), tensor(n.inputs[1]), integer(rows_out),
              integer(rows_in)});
      return absl::OkStatus();
    }
    case OpKind::kMatmul:
    case OpKind::kGemm: {
      const Type& x = n.inputs[0]->type;
      const Type& w = n.inputs[1]->type;
      PlanGemm e;
      e.node = index;
      e.m = product_expr(x.shape, 0, x.shape.size() - 1);
      absl::StatusOr<int64_t> nn = const_dim(w.shape[0], "N"), kk = const_dim(w.shape[1], "K");
      if (!nn.ok() || !kk.ok()) return unsupported(n, names_, "weight dims must be constants");
      e.n = *nn;
      e.k = *kk;
      e.a_dtype = x.dtype;
      e.b_dtype = w.dtype;
      e.out_dtype = n.outputs[0]->type.dtype;
      const std::string epilogue =
          n.op == OpKind::kGemm ? n.attrs.string_or("epilogue", "none") : "none";
      std::optional<GemmEpilogue> ep = parse_gemm_epilogue(epilogue);
      if (!ep) return unsupported(n, names_, "unknown epilogue " + epilogue);
      e.epilogue = *ep;
      e.a = name(n.inputs[0]);
      e.b = name(n.inputs[1]);
      size_t next = 2;
      const bool bias =
          e.epilogue == GemmEpilogue::kBias || e.epilogue == GemmEpilogue::kBiasResidual;
      if (bias) e.bias = name(n.inputs[next++]);
      if (e.epilogue == GemmEpilogue::kResidual || e.epilogue == GemmEpilogue::kBiasResidual) {
        e.residual = name(n.inputs[next++]);
      }
      e.out = name(n.outputs[0]);
      out_.gemms.push_back(e);
      return absl::OkStatus();
    }
    case OpKind::kAdd: return elementwise(index, n, binary("add"), n.outputs[0]->type.dtype);
    case OpKind::kSub: return elementwise(index, n, binary("sub"), n.outputs[0]->type.dtype);
    case OpKind::kMul: return elementwise(index, n, binary("mul"), n.outputs[0]->type.dtype);
    case OpKind::kDiv: return elementwise(index, n, binary("div"), n.outputs[0]->type.dtype);
    case OpKind::kNeg: return elementwise(index, n, "neg($0)", n.outputs[0]->type.dtype);
    case OpKind::kExp: return elementwise(index, n, "exp($0)", n.outputs[0]->type.dtype);
    case OpKind::kRsqrt: return elementwise(index, n, "rsqrt($0)", n.outputs[0]->type.dtype);
    case OpKind::kSilu: return elementwise(index, n, "silu($0)", n.outputs[0]->type.dtype);
    case OpKind::kCast: return elementwise(index, n, "$0", n.outputs[0]->type.dtype);
    case OpKind::kFusedElementwise: {
      absl::StatusOr<std::string> e = n.attrs.get_string("expr");
      if (!e.ok()) return e.status();
      return elementwise(index, n, *e, n.outputs[0]->type.dtype);
    }
    case OpKind::kRmsNorm:
    case OpKind::kRmsNormResidual: {
      const bool residual = n.op == OpKind::kRmsNormResidual;
      const Type& x = n.inputs[0]->type;
      absl::StatusOr<int64_t> h = const_dim(x.shape.back(), "hidden size");
      if (!h.ok()) return unsupported(n, names_, std::string(h.status().message()));
      KernelSpec spec =
          make_spec(residual ? KernelFamily::kRmsNormResidual : KernelFamily::kRmsNorm, x.dtype);
      if (!kernel_type_name(x.dtype).ok()) return unsupported(n, names_, "dtype");
      row_layout(*h, x.dtype, spec);
      absl::StatusOr<double> eps = n.attrs.get_float("eps");
      if (!eps.ok()) return eps.status();
      std::vector<LaunchArg> args = {tensor(n.outputs[0])};
      if (residual) args.push_back(tensor(n.outputs[1]));
      args.push_back(tensor(n.inputs[0]));
      if (residual) args.push_back(tensor(n.inputs[1]));
      args.push_back(tensor(n.inputs[residual ? 2 : 1]));
      args.push_back(real(*eps));
      launch(index, spec, rule1d(product_expr(x.shape, 0, x.shape.size() - 1), spec.param("t")),
             args);
      return absl::OkStatus();
    }
    case OpKind::kRope: {
      const Type& x = n.inputs[0]->type;
      absl::StatusOr<int64_t> h = const_dim(x.shape[1], "heads"),
                              d = const_dim(x.shape[2], "head_dim");
      if (!h.ok() || !d.ok()) return unsupported(n, names_, "heads and head_dim must be constants");
      if (!kernel_type_name(x.dtype).ok()) return unsupported(n, names_, "dtype");
      absl::StatusOr<std::vector<float>> f = rope_inv_freq_f32(n.attrs);
      if (!f.ok()) return f.status();
      KernelSpec spec = make_spec(KernelFamily::kRope, x.dtype);
      const int64_t rot = n.attrs.int_or("rotary_dim", *d);
      spec.params = {{"d", *d}, {"r", rot}};
      spec.tags = {n.attrs.string_or("layout", "half")};
      spec.inv_freq = *f;
      spec.payload =
          std::string(reinterpret_cast<const char*>(f->data()), f->size() * sizeof(float));
      const std::string T = dim_expr(x.shape[0]);
      launch(index, spec, rule1d(absl::StrCat("cdiv(", T, "*", *h * *d / 2, ", 256)"), 256),
             {tensor(n.outputs[0]), tensor(n.inputs[0]), tensor(n.inputs[1]), integer(T),
              integer(absl::StrCat(*h))});
      return absl::OkStatus();
    }
    case OpKind::kFlashAttention: return attention(index, n);
    case OpKind::kRopeTable:
    case OpKind::kSlice:
    case OpKind::kConcat:
    case OpKind::kReduceSum:
    case OpKind::kReduceMean:
    case OpKind::kReduceMax:
    case OpKind::kKvWrite:
    case OpKind::kPagedQk:
    case OpKind::kCausalMask:
    case OpKind::kPagedPv:
      return unsupported(n, names_,
                         "this primitive op only runs on the CPU reference backend; the fusion "
                         "passes (rope, rmsnorm-residual, attention, elementwise) remove it");
  }
  return absl::InternalError("unhandled op");
}

}  // namespace

absl::StatusOr<LoweredGraph> lower_graph(const Graph& graph, const LoweringOptions& options) {
  LoweredGraph out;
  Lowerer l(graph, out);
  for (int i = 0; i < graph.num_nodes(); ++i) {
    if (absl::Status s = l.lower(i, *graph.nodes()[i]); !s.ok()) return s;
  }
  if (options.add_sampling) {
    KernelSpec spec = make_spec(KernelFamily::kSampling, DType::kF32);
    spec.params = {{"w", 32}};
    LaunchRule r;
    r.grid = {"S", "1", "1"};
    r.block = {"1024", "1", "1"};
    std::string logits = graph.outputs().empty() ? "" : l.name(graph.outputs()[0].value);
    int64_t vocab = 0;
    if (!graph.outputs().empty() && !graph.outputs()[0].value->type.shape.empty()) {
      vocab = graph.outputs()[0].value->type.shape.back().value;
    }
    l.launch(-1, spec, r,
             {LaunchArg::runtime_input(RuntimeInput::kSampledIds), LaunchArg::tensor(logits),
              LaunchArg::runtime_input(RuntimeInput::kTemperature),
              LaunchArg::runtime_input(RuntimeInput::kTopK),
              LaunchArg::runtime_input(RuntimeInput::kTopP),
              LaunchArg::runtime_input(RuntimeInput::kUniform),
              LaunchArg::integer(absl::StrCat(vocab))});
  }
  if (!l.error().ok()) return l.error();
  return out;
}

}  // namespace kiln
