// Families rope and kv_append (see rope.h).
#include "codegen/families/rope.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "codegen/kernel_source.h"
#include "ir/ops.h"
#include "ir/rope.h"
#include "ir/view.h"

namespace kiln {

namespace {

/// `__constant__ float kiln_rope_inv_freq[ROT / 2] = {...};` for the generated config.
absl::StatusOr<std::string> inv_freq_table(const std::vector<float>& inv_freq, int64_t rotary_dim) {
  if (static_cast<int64_t>(inv_freq.size()) != rotary_dim / 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("inv_freq has ", inv_freq.size(), " entries, want ", rotary_dim / 2));
  }
  std::vector<std::string> f;
  for (float v : inv_freq) f.push_back(float_literal(v));
  return absl::StrCat("// inv_freq[i] = theta^(-2i/rotary_dim) (llama3-adjusted when scaled)\n",
                      "__constant__ float kiln_rope_inv_freq[", rotary_dim / 2, "] = {",
                      absl::StrJoin(f, ", "), "};\n");
}

/// The only node reading `v`, or nullptr.
const Node* sole_reader(const Graph& g, const Value* v) {
  std::vector<Node*> users = g.users(v);
  return users.size() == 1 && g.use_count(v) == 1 ? users[0] : nullptr;
}

}  // namespace

std::string RopeSpec::key() const {
  std::vector<std::pair<std::string, int64_t>> params = {{"d", head_dim}, {"r", rotary_dim}};
  if (x_row_stride != 0) params.emplace_back("xs", x_row_stride);
  return spec_key(
      KernelFamily::kRope, dtype, params,
      {rotate_half ? "half" : "interleaved"},
      std::string(reinterpret_cast<const char*>(inv_freq.data()), inv_freq.size() * sizeof(float)));
}

std::vector<EntryDecl> RopeSpec::entry() const {
  return {{"kiln_t*", "out"},
          {"const kiln_t*", "x"},
          {"const int*", "positions"},
          {"int", "num_tokens"},
          {"int", "num_heads"}};
}

absl::StatusOr<KernelTemplate> RopeSpec::kernel_template() const {
  absl::StatusOr<std::string> table = inv_freq_table(inv_freq, rotary_dim);
  if (!table.ok()) return table.status();
  KernelTemplate t{"rope.cuh", dtype, *table, 256};
  t.call = absl::StrCat("kiln_k::rope<kiln_t, ", head_dim, ", ", rotary_dim, ", ",
                        rotate_half ? "true" : "false", ", ", x_row_stride, "LL>");
  t.call_args = "out, x, positions, kiln_rope_inv_freq, num_tokens, num_heads";
  return t;
}

std::string KvAppendSpec::key() const {
  std::vector<std::pair<std::string, int64_t>> params = {{"d", head_dim}};
  if (k_row_stride != 0) params.emplace_back("ks", k_row_stride);
  if (v_row_stride != 0) params.emplace_back("vs", v_row_stride);
  return spec_key(KernelFamily::kKvAppend, dtype, params, kv_cache_tags(cache));
}

std::vector<EntryDecl> KvAppendSpec::entry() const {
  if (cache == KvCacheKind::kFp8E4M3) {
    return {{"kiln_kv_t*", "k_cache"},      {"kiln_kv_t*", "v_cache"}, {"float*", "k_scales"},
            {"float*", "v_scales"},         {"const kiln_t*", "k"},    {"const kiln_t*", "v"},
            {"const int*", "slot_mapping"}, {"int", "num_tokens"},     {"int", "num_kv_heads"}};
  }
  return {{"kiln_t*", "k_cache"}, {"kiln_t*", "v_cache"},         {"const kiln_t*", "k"},
          {"const kiln_t*", "v"}, {"const int*", "slot_mapping"}, {"int", "num_tokens"},
          {"int", "num_kv_heads"}};
}

absl::StatusOr<KernelTemplate> KvAppendSpec::kernel_template() const {
  KernelTemplate t{"rope.cuh", dtype, kv_cache_typedef(cache), kKvAppendThreads};
  t.call = absl::StrCat(cache == KvCacheKind::kFp8E4M3 ? "kiln_k::kv_append_fp8<kiln_t, "
                                                       : "kiln_k::kv_append<kiln_t, ",
                        head_dim, ", ", k_row_stride, "LL, ", v_row_stride, "LL>");
  return t;
}


std::string RopeKvAppendSpec::key() const {
  std::vector<std::pair<std::string, int64_t>> params = {{"d", head_dim}, {"r", rotary_dim}};
  if (q_row_stride != 0) params.emplace_back("qs", q_row_stride);
  if (k_row_stride != 0) params.emplace_back("ks", k_row_stride);
  if (v_row_stride != 0) params.emplace_back("vs", v_row_stride);
  std::vector<std::string> tags = {rotate_half ? "half" : "interleaved"};
  for (std::string& t : kv_cache_tags(cache)) tags.push_back(std::move(t));
  return spec_key(
      KernelFamily::kRopeKvAppend, dtype, params, tags,
      std::string(reinterpret_cast<const char*>(inv_freq.data()), inv_freq.size() * sizeof(float)));
}

std::vector<EntryDecl> RopeKvAppendSpec::entry() const {
  if (cache == KvCacheKind::kFp8E4M3) {
    return {{"kiln_t*", "q_out"},        {"kiln_t*", "k_out"},           {"kiln_kv_t*", "k_cache"},
            {"kiln_kv_t*", "v_cache"},   {"float*", "k_scales"},         {"float*", "v_scales"},
            {"const kiln_t*", "q"},      {"const kiln_t*", "k"},         {"const kiln_t*", "v"},
            {"const int*", "positions"}, {"const int*", "slot_mapping"}, {"int", "num_tokens"},
            {"int", "num_q_heads"},      {"int", "num_kv_heads"}};
  }
  return {{"kiln_t*", "q_out"},        {"kiln_t*", "k_out"},     {"kiln_t*", "k_cache"},
          {"kiln_t*", "v_cache"},      {"const kiln_t*", "q"},   {"const kiln_t*", "k"},
          {"const kiln_t*", "v"},      {"const int*", "positions"},
          {"const int*", "slot_mapping"}, {"int", "num_tokens"}, {"int", "num_q_heads"},
          {"int", "num_kv_heads"}};
}

absl::StatusOr<KernelTemplate> RopeKvAppendSpec::kernel_template() const {
  absl::StatusOr<std::string> table = inv_freq_table(inv_freq, rotary_dim);
  if (!table.ok()) return table.status();
  const bool fp8 = cache == KvCacheKind::kFp8E4M3;
  KernelTemplate t{"rope.cuh", dtype, kv_cache_typedef(cache) + *table, kKvAppendThreads};
  t.call =
      absl::StrCat(fp8 ? "kiln_k::rope_kv_append_fp8<kiln_t, " : "kiln_k::rope_kv_append<kiln_t, ",
                   head_dim, ", ", rotary_dim, ", ", rotate_half ? "true" : "false", ", ",
                   q_row_stride, "LL, ", k_row_stride, "LL, ", v_row_stride, "LL>");
  t.call_args = fp8 ? "q_out, k_out, k_cache, v_cache, k_scales, v_scales, q, k, v, positions, "
                      "slot_mapping, kiln_rope_inv_freq, num_tokens, num_q_heads, num_kv_heads"
                    : "q_out, k_out, k_cache, v_cache, q, k, v, positions, slot_mapping, "
                      "kiln_rope_inv_freq, num_tokens, num_q_heads, num_kv_heads";
  return t;
}

std::optional<RopePair> ropes_absorbed_by(const Graph& graph, const Node& attention) {
  if (attention.op != OpKind::kFlashAttention) return std::nullopt;
  const FlashAttentionOp op(attention);
  const Node* q = op.q()->producer;
  const Node* k = op.k()->producer;
  if (q == nullptr || k == nullptr || q == k || q->op != OpKind::kRope || k->op != OpKind::kRope) {
    return std::nullopt;
  }
  const RopeOp qr(*q), kr(*k);
  if (qr.positions() != kr.positions() || qr.positions() != op.positions() ||
      !(q->attrs == k->attrs) || sole_reader(graph, qr.output()) != &attention ||
      sole_reader(graph, kr.output()) != &attention) {
    return std::nullopt;
  }
  // The fused kernel writes the k rope's result at the q rope's place in the program, so k's
  // input must exist by then: it does when both read values computed before the q rope.
  const Node* kx = kr.x()->producer;
  if (kx != nullptr && !graph.is_before(kx, q)) return std::nullopt;
  const Node* vx = op.v()->producer;
  if (vx != nullptr && !graph.is_before(vx, q)) return std::nullopt;
  return RopePair{q, k};
}

namespace {

// The q rope of an attention that absorbs both ropes (RopePair): rope q and k, write both results
// and the step's K/V rows into the cache, in one launch.
absl::Status lower_rope_kv_append(const RopePair& pair, const Node& attention,
                                  LoweringContext& ctx) {
  const FlashAttentionOp op(attention);
  const RopeOp q(*pair.q_rope), k(*pair.k_rope);
  const Shape& qs = q.x()->type.shape;  // [T, Hq, d]
  const Shape& ks = k.x()->type.shape;  // [T, Hkv, d]
  absl::StatusOr<int64_t> hq = const_dim(qs[1], "query heads"), hkv = const_dim(ks[1], "kv heads"),
                          d = const_dim(qs[2], "head_dim");
  if (!hq.ok() || !hkv.ok() || !d.ok()) return ctx.unsupported("heads and head_dim must be constants");
  const DType dt = q.x()->type.dtype;
  if (!kernel_type_name(dt).ok()) return ctx.unsupported("dtype");
  absl::StatusOr<std::vector<double>> f = rope_inv_freq(pair.q_rope->attrs);
  if (!f.ok()) return f.status();
  auto spec = std::make_shared<RopeKvAppendSpec>();
  spec->dtype = dt;
  spec->cache = kv_cache_kind(op.k_cache());
  spec->head_dim = *d;
  spec->rotary_dim = pair.q_rope->attrs.int_or("rotary_dim", *d);
  spec->rotate_half = pair.q_rope->attrs.string_or("layout", "half") == "half";
  spec->inv_freq.assign(f->begin(), f->end());
  const LaunchArg q_arg = ctx.strided_tensor(q.x(), &spec->q_row_stride);
  const LaunchArg k_arg = ctx.strided_tensor(k.x(), &spec->k_row_stride);
  const LaunchArg v_arg = ctx.strided_tensor(op.v(), &spec->v_row_stride);
  // One thread per element pair of every (token, q / k / v head); with an fp8e4m3 cache, one
  // warp per (token, head) row, since a K or V row is quantized as a whole.
  const std::string T = dim_expr(qs[0]);
  const bool fp8 = spec->cache == KvCacheKind::kFp8E4M3;
  const std::string grid =
      fp8 ? absl::StrCat("cdiv(", T, "*", *hq + 2 * *hkv, ", ", kKvAppendThreads / 32, ")")
          : absl::StrCat("cdiv(", T, "*", (*hq + 2 * *hkv) * *d / 2, ", ", kKvAppendThreads, ")");
  std::vector<BoundParam> args = {{"q_out", ctx.tensor(q.output())},
                                  {"k_out", ctx.tensor(k.output())},
                                  {"k_cache", ctx.tensor(op.k_cache())},
                                  {"v_cache", ctx.tensor(op.v_cache())},
                                  {"q", q_arg},
                                  {"k", k_arg},
                                  {"v", v_arg},
                                  {"positions", ctx.tensor(op.positions())},
                                  {"slot_mapping", ctx.tensor(op.slot_mapping())},
                                  {"num_tokens", LaunchArg::integer(T)},
                                  {"num_q_heads", LaunchArg::integer(absl::StrCat(*hq))},
                                  {"num_kv_heads", LaunchArg::integer(absl::StrCat(*hkv))}};
  if (fp8) {
    if (!op.has_scales()) return ctx.unsupported("an fp8e4m3 cache without its scale arrays");
    args.push_back({"k_scales", ctx.tensor(op.k_scales())});
    args.push_back({"v_scales", ctx.tensor(op.v_scales())});
  }
  return ctx.launch(std::move(spec), rule_1d(grid, kKvAppendThreads), std::move(args));
}

}  // namespace

absl::Status lower_rope(const Node& n, LoweringContext& ctx) {
  // An attention's q/k ropes: one rope_kv_append at the q rope, nothing at the k rope.
  if (const Node* reader = sole_reader(ctx.graph(), n.outputs[0]); reader != nullptr) {
    if (std::optional<RopePair> pair = ropes_absorbed_by(ctx.graph(), *reader)) {
      if (pair->k_rope == &n) return absl::OkStatus();
      return lower_rope_kv_append(*pair, *reader, ctx);
    }
  }
  const Type& x = n.inputs[0]->type;  // [T, heads, head_dim]
  absl::StatusOr<int64_t> h = const_dim(x.shape[1], "heads"), d = const_dim(x.shape[2], "head_dim");
  if (!h.ok() || !d.ok()) return ctx.unsupported("heads and head_dim must be constants");
  if (!kernel_type_name(x.dtype).ok()) return ctx.unsupported("dtype");
  // The kernel takes fp32 inverse frequencies, computed once by the shared ir/rope.h (in double).
  absl::StatusOr<std::vector<double>> f = rope_inv_freq(n.attrs);
  if (!f.ok()) return f.status();
  auto spec = std::make_shared<RopeSpec>();
  spec->dtype = x.dtype;
  spec->head_dim = *d;
  spec->rotary_dim = n.attrs.int_or("rotary_dim", *d);
  spec->rotate_half = n.attrs.string_or("layout", "half") == "half";
  spec->inv_freq.assign(f->begin(), f->end());
  // x may be strided rows (fuse-horizontal's q or k slice of the merged QKV GEMM's result).
  const LaunchArg x_arg = ctx.strided_tensor(n.inputs[0], &spec->x_row_stride);
  // One thread per rotated pair of every (token, head).
  const std::string T = dim_expr(x.shape[0]);
  return ctx.launch(std::move(spec),
                    rule_1d(absl::StrCat("cdiv(", T, "*", *h * *d / 2, ", 256)"), 256),
                    {{"out", ctx.tensor(n.outputs[0])},
                     {"x", x_arg},
                     {"positions", ctx.tensor(n.inputs[1])},
                     {"num_tokens", LaunchArg::integer(T)},
                     {"num_heads", LaunchArg::integer(absl::StrCat(*h))}});
}

absl::Status launch_kv_append(LoweringContext& ctx, DType dtype, const Value* k, const Value* v,
                              const Value* k_cache, const Value* v_cache, const Value* k_scales,
                              const Value* v_scales, const Value* slot_mapping) {
  const Shape& ks = k->type.shape;  // [T, kv_heads, head_dim]
  absl::StatusOr<int64_t> hkv = const_dim(ks[1], "kv heads"), d = const_dim(ks[2], "head_dim");
  if (!hkv.ok() || !d.ok()) return ctx.unsupported("kv heads and head_dim must be constants");
  auto spec = std::make_shared<KvAppendSpec>();
  spec->dtype = dtype;
  spec->cache = kv_cache_kind(k_cache);
  spec->head_dim = *d;
  const bool fp8 = spec->cache == KvCacheKind::kFp8E4M3;
  if (fp8 && (k_scales == nullptr || v_scales == nullptr)) {
    return ctx.unsupported("an fp8e4m3 cache without its scale arrays");
  }
  // K and V may be strided rows (slices of the merged QKV GEMM's result); the kernel copies
  // 16-byte chunks, so a view must start and step on 16-byte boundaries.
  const LaunchArg k_arg = ctx.strided_tensor(k, &spec->k_row_stride);
  const LaunchArg v_arg = ctx.strided_tensor(v, &spec->v_row_stride);
  const int64_t per_chunk = 16 / 2;
  for (const Value* kv : {k, v}) {
    std::optional<StridedRows> view = strided_rows(*kv);
    if (view && (view->offset % per_chunk != 0 || view->row_stride % per_chunk != 0)) {
      return ctx.unsupported("a K/V view whose rows are not 16-byte aligned");
    }
  }
  // One thread per 16-byte chunk of every (token, kv head) row of K and V; with an fp8e4m3 cache,
  // one warp per row of K and of V (a row is quantized as a whole).
  const int64_t chunks = *d * 2 / 16;
  const std::string T = dim_expr(ks[0]);
  const std::string grid =
      fp8 ? absl::StrCat("cdiv(", T, "*", 2 * *hkv, ", ", kKvAppendThreads / 32, ")")
          : absl::StrCat("cdiv(", T, "*", *hkv * chunks, ", ", kKvAppendThreads, ")");
  std::vector<BoundParam> args = {{"k_cache", ctx.tensor(k_cache)},
                                  {"v_cache", ctx.tensor(v_cache)},
                                  {"k", k_arg},
                                  {"v", v_arg},
                                  {"slot_mapping", ctx.tensor(slot_mapping)},
                                  {"num_tokens", LaunchArg::integer(T)},
                                  {"num_kv_heads", LaunchArg::integer(absl::StrCat(*hkv))}};
  if (fp8) {
    args.push_back({"k_scales", ctx.tensor(k_scales)});
    args.push_back({"v_scales", ctx.tensor(v_scales)});
  }
  return ctx.launch(std::move(spec), rule_1d(grid, kKvAppendThreads), std::move(args));
}

}  // namespace kiln
