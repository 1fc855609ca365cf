// Families rope and kv_append (see rope.h).
#include "codegen/families/rope.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "codegen/kernel_source.h"
#include "ir/rope.h"
#include "ir/view.h"

namespace kiln {

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

absl::StatusOr<std::string> RopeSpec::source() const {
  if (static_cast<int64_t>(inv_freq.size()) != rotary_dim / 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("inv_freq has ", inv_freq.size(), " entries, want ", rotary_dim / 2));
  }
  std::vector<std::string> f;
  for (float v : inv_freq) f.push_back(float_literal(v));
  const std::string table =
      absl::StrCat("// inv_freq[i] = theta^(-2i/rotary_dim) (llama3-adjusted when scaled)\n",
                   "__constant__ float kiln_rope_inv_freq[", rotary_dim / 2, "] = {",
                   absl::StrJoin(f, ", "), "};\n");
  return instantiate(*this, "rope.cuh", dtype, table, 256,
                     absl::StrCat("kiln_k::rope<kiln_t, ", head_dim, ", ", rotary_dim, ", ",
                                  rotate_half ? "true" : "false", ", ", x_row_stride, "LL>"),
                     "out, x, positions, kiln_rope_inv_freq, num_tokens, num_heads");
}

std::string KvAppendSpec::key() const {
  std::vector<std::pair<std::string, int64_t>> params = {{"d", head_dim}};
  if (k_row_stride != 0) params.emplace_back("ks", k_row_stride);
  if (v_row_stride != 0) params.emplace_back("vs", v_row_stride);
  return spec_key(KernelFamily::kKvAppend, dtype, params);
}

std::vector<EntryDecl> KvAppendSpec::entry() const {
  return {{"kiln_t*", "k_cache"}, {"kiln_t*", "v_cache"},         {"const kiln_t*", "k"},
          {"const kiln_t*", "v"}, {"const int*", "slot_mapping"}, {"int", "num_tokens"},
          {"int", "num_kv_heads"}};
}

absl::StatusOr<std::string> KvAppendSpec::source() const {
  return instantiate(*this, "rope.cuh", dtype, "", 256,
                     absl::StrCat("kiln_k::kv_append<kiln_t, ", head_dim, ", ", k_row_stride,
                                  "LL, ", v_row_stride, "LL>"));
}

absl::Status lower_rope(const Node& n, LoweringContext& ctx) {
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
                              const Value* k_cache, const Value* v_cache,
                              const Value* slot_mapping) {
  const Shape& ks = k->type.shape;  // [T, kv_heads, head_dim]
  absl::StatusOr<int64_t> hkv = const_dim(ks[1], "kv heads"), d = const_dim(ks[2], "head_dim");
  if (!hkv.ok() || !d.ok()) return ctx.unsupported("kv heads and head_dim must be constants");
  auto spec = std::make_shared<KvAppendSpec>();
  spec->dtype = dtype;
  spec->head_dim = *d;
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
  // One thread per 16-byte chunk of every (token, kv head) row of K and V.
  const int64_t chunks = *d * 2 / 16;
  const std::string T = dim_expr(ks[0]);
  return ctx.launch(std::move(spec),
                    rule_1d(absl::StrCat("cdiv(", T, "*", *hkv * chunks, ", 256)"), 256),
                    {{"k_cache", ctx.tensor(k_cache)},
                     {"v_cache", ctx.tensor(v_cache)},
                     {"k", k_arg},
                     {"v", v_arg},
                     {"slot_mapping", ctx.tensor(slot_mapping)},
                     {"num_tokens", LaunchArg::integer(T)},
                     {"num_kv_heads", LaunchArg::integer(absl::StrCat(*hkv))}});
}

}  // namespace kiln
