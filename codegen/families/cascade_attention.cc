// Families cascade_prefix and cascade_suffix (see cascade_attention.h).
#include "codegen/families/cascade_attention.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "codegen/families/attention.h"

namespace kiln {
namespace {

absl::Status refuse_fp8(KvCacheKind cache) {
  if (cache == KvCacheKind::kFp8E4M3) {
    return absl::UnimplementedError(
        "cascade attention over an fp8e4m3 KV cache: not implemented (the prefix kernel has no "
        "dequantizing tile path); such plans use plain paged decode");
  }
  return absl::OkStatus();
}

}  // namespace

std::string CascadePrefixSpec::key() const {
  return spec_key(family(), dtype, {{"d", head_dim}, {"g", group}, {"kv", tile_kv}, {"w", warps}});
}

std::vector<EntryDecl> CascadePrefixSpec::entry() const {
  return {{"float*", "prefix_o"},        {"float*", "prefix_lse"},
          {"const kiln_t*", "q"},        {"const kiln_t*", "k_cache"},
          {"const kiln_t*", "v_cache"},  {"const int*", "qo_indptr"},
          {"const int*", "prefix_seqs"}, {"const int*", "prefix_pages"},
          {"int", "num_members"},        {"int", "prefix_len"},
          {"int", "num_seqs"},           {"int", "num_kv_heads"},
          {"int", "page_size"},          {"float", "scale"}};
}

int64_t CascadePrefixSpec::shared_bytes() const {
  // CascadePrefixSmem<T, D, TILE_KV, WARPS>::kBytes: Q rows, then two stages of K and V tiles.
  const int64_t stride = head_dim + 8;
  return warps * 16 * stride * 2 + 2 * 2 * tile_kv * stride * 2;
}

absl::StatusOr<KernelTemplate> CascadePrefixSpec::kernel_template() const {
  KernelTemplate t{"cascade_attention.cuh", dtype, "", 32 * warps};
  t.call = absl::StrCat("kiln_k::cascade_prefix_attention<kiln_t, ", head_dim, ", ", group, ", ",
                        tile_kv, ", ", warps, ">");
  return t;
}

std::string CascadeSuffixSpec::key() const {
  return spec_key(family(), decode.dtype,
                  {{"d", decode.head_dim},
                   {"g", decode.group},
                   {"kv", decode.tile_kv},
                   {"w", decode.warps},
                   {"st", decode.stages}},
                  decode.unified ? std::vector<std::string>{"um"} : std::vector<std::string>{});
}

std::vector<EntryDecl> CascadeSuffixSpec::entry() const {
  std::vector<EntryDecl> e = decode.entry();
  e.push_back({"const int*", "kv_start"});
  e.push_back({"const float*", "prefix_o"});
  e.push_back({"const float*", "prefix_lse"});
  e.push_back({"int", "prefix_splits"});
  return e;
}

absl::StatusOr<KernelTemplate> CascadeSuffixSpec::kernel_template() const {
  absl::StatusOr<KernelTemplate> t = decode.kernel_template();
  if (!t.ok()) return t.status();
  // The same template with CASCADE = true, and its four trailing arguments.
  t->call.insert(t->call.size() - 1, ", true");
  absl::StrAppend(&t->call_args, ", kv_start, prefix_o, prefix_lse, prefix_splits");
  return t;
}

absl::StatusOr<std::shared_ptr<CascadePrefixSpec>> make_cascade_prefix_spec(
    DType dtype, KvCacheKind cache, int64_t head_dim, int64_t group, int64_t tile_kv,
    int64_t warps) {
  if (absl::Status s = refuse_fp8(cache); !s.ok()) return s;
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("cascade_prefix: ", parts...));
  };
  if (dtype != DType::kBF16 && dtype != DType::kF16) return bad("dtype must be bf16 or f16");
  if (head_dim % 16 != 0 || head_dim < 16 || head_dim > 256) {
    return bad("head_dim ", head_dim, " (a multiple of 16 up to 256)");
  }
  if (group < 1 || group > 16) return bad("GQA group ", group, " (1 to 16)");
  if (tile_kv != 16 && tile_kv != 32 && tile_kv != 64) return bad("tile_kv must be 16, 32 or 64");
  if (warps != 1 && warps != 2 && warps != 4 && warps != 8)
    return bad("warps must be 1, 2, 4 or 8");
  auto s = std::make_shared<CascadePrefixSpec>();
  s->dtype = dtype, s->head_dim = head_dim, s->group = group, s->tile_kv = tile_kv;
  s->warps = warps;
  if (s->shared_bytes() > 227 * 1024) {
    return bad(s->shared_bytes(), " bytes of shared memory (> 227 KB)");
  }
  return s;
}

absl::StatusOr<std::shared_ptr<CascadeSuffixSpec>> make_cascade_suffix_spec(
    DType dtype, KvCacheKind cache, int64_t head_dim, int64_t group, const DecodeConfig& c) {
  if (absl::Status s = refuse_fp8(cache); !s.ok()) return s;
  auto s = std::make_shared<CascadeSuffixSpec>();
  s->decode = *make_decode_spec(dtype, cache, head_dim, group, c);
  return s;
}

std::string cascade_prefix_split_expr(const CascadePrefixSpec& spec, int64_t kv_heads,
                                      int64_t target_blocks) {
  const std::string row_blocks = absl::StrCat("max(1, cdiv(", kCascadeMembersSymbol, "*",
                                              spec.group, ", ", spec.rows_per_block(), "))");
  return absl::StrCat("max(1, min(", kMaxCascadePrefixSplits, ", min(cdiv(", target_blocks, ", ",
                      row_blocks, "*", kv_heads, "), max(1, cdiv(", kCascadePrefixSymbol,
                      ", 512)))))");
}

absl::Status lower_cascade_decode(LoweringContext& ctx, CascadeDecodeLowering l) {
  if (l.cache == KvCacheKind::kFp8E4M3) return absl::OkStatus();
  // K/V tiles of 32 rows past head_dim 128, so the two stages fit sm_80's 163 KB of shared
  // memory at head_dim 256 (101 KB; 165 KB with 64 rows).
  absl::StatusOr<std::shared_ptr<CascadePrefixSpec>> prefix =
      make_cascade_prefix_spec(l.dtype, l.cache, l.head_dim, l.group, l.head_dim > 128 ? 32 : 64);
  // A shape the prefix kernel does not take keeps plain decode in every step (no cascade).
  if (!prefix.ok()) return absl::OkStatus();
  absl::StatusOr<std::shared_ptr<CascadeSuffixSpec>> suffix =
      make_cascade_suffix_spec(l.dtype, l.cache, l.head_dim, l.group, l.config);
  if (!suffix.ok()) return ctx.unsupported(std::string(suffix.status().message()));
  auto arg = [&](const char* name) -> absl::StatusOr<LaunchArg> {
    for (const BoundParam& b : l.decode_args) {
      if (b.first == name) return b.second;
    }
    return absl::InternalError(absl::StrCat("cascade lowering: the decode launch binds no ", name));
  };

  // The prefix partials: [kMaxCascadePrefixSplits, S, Hq, D] outputs and [.., S, Hq] log-sum-exps.
  // One pair for every layer of these shapes: the layers' attentions run one after another on one
  // stream, and a layer's suffix has read its prefix partials before the next prefix writes.
  const std::string wo = absl::StrCat("cascade_prefix_o_h", l.q_heads, "_d", l.head_dim),
                    wl = absl::StrCat("cascade_prefix_lse_h", l.q_heads);
  if (!ctx.has_workspace(wo)) {
    ctx.add_workspace(
        {wo, absl::StrCat(kMaxCascadePrefixSplits, "*S*", l.q_heads * l.head_dim * 4)});
  }
  if (!ctx.has_workspace(wl)) {
    ctx.add_workspace({wl, absl::StrCat(kMaxCascadePrefixSplits, "*S*", l.q_heads * 4)});
  }
  const std::string prefix_splits =
      cascade_prefix_split_expr(**prefix, l.kv_heads, l.target_blocks);
  const std::string kv_heads = absl::StrCat(l.kv_heads);

  std::vector<BoundParam> pa = {
      {"prefix_o", LaunchArg::workspace(wo)},
      {"prefix_lse", LaunchArg::workspace(wl)},
      {"prefix_seqs", LaunchArg::runtime_input(RuntimeInput::kCascadePrefixSeqs)},
      {"prefix_pages", LaunchArg::runtime_input(RuntimeInput::kCascadePrefixPages)},
      {"num_members", LaunchArg::integer(kCascadeMembersSymbol)},
      {"prefix_len", LaunchArg::integer(kCascadePrefixSymbol)}};
  for (const char* name :
       {"q", "k_cache", "v_cache", "qo_indptr", "num_seqs", "num_kv_heads", "page_size", "scale"}) {
    absl::StatusOr<LaunchArg> a = arg(name);
    if (!a.ok()) return a.status();
    pa.push_back({name, *a});
  }
  LaunchRule pr;
  // Row blocks of (member, query head) rows per KV head, the KV heads, the prefix's splits.
  pr.grid = {absl::StrCat("max(1, cdiv(", kCascadeMembersSymbol, "*", l.group, ", ",
                          (*prefix)->rows_per_block(), "))"),
             kv_heads, prefix_splits};
  pr.block = {absl::StrCat(32 * (*prefix)->warps), "1", "1"};
  pr.dynamic_shared_bytes = absl::StrCat((*prefix)->shared_bytes());
  pr.when = StepKind::kCascade;
  const int prefix_launch = ctx.num_launches();
  if (absl::Status s = ctx.launch(*prefix, pr, std::move(pa)); !s.ok()) return s;

  // The suffix: the decode launch's bindings, its KV range from kv_start, the prefix's partials.
  std::vector<BoundParam> sa = std::move(l.decode_args);
  sa.push_back({"kv_start", LaunchArg::runtime_input(RuntimeInput::kCascadeKvStart)});
  sa.push_back({"prefix_o", LaunchArg::workspace(wo)});
  sa.push_back({"prefix_lse", LaunchArg::workspace(wl)});
  sa.push_back({"prefix_splits", LaunchArg::integer(prefix_splits)});
  LaunchRule sr;
  sr.grid = {"S", kv_heads,
             decode_split_expr(l.max_split, l.config.split_kv > 0, l.kv_heads, l.target_blocks,
                               kCascadeSuffixSymbol)};
  sr.block = {absl::StrCat(32 * (*suffix)->decode.warps), "1", "1"};
  sr.dynamic_shared_bytes = absl::StrCat((*suffix)->shared_bytes());
  sr.when = StepKind::kCascade;
  const int suffix_launch = ctx.num_launches();
  if (absl::Status s = ctx.launch(*suffix, sr, std::move(sa)); !s.ok()) return s;
  ctx.add_cascade({l.decode_launch, prefix_launch, suffix_launch});
  return absl::OkStatus();
}

int64_t cascade_prefix_splits(const CascadePrefixSpec& spec, int64_t rows, int64_t kv_heads,
                              int64_t prefix_len, int64_t target_blocks) {
  const int64_t row_blocks =
      std::max<int64_t>(1, (rows + spec.rows_per_block() - 1) / spec.rows_per_block());
  const int64_t want = (target_blocks + row_blocks * kv_heads - 1) / (row_blocks * kv_heads);
  const int64_t most = std::max<int64_t>(1, (prefix_len + 511) / 512);
  return std::clamp<int64_t>(std::min(want, most), 1, kMaxCascadePrefixSplits);
}

}  // namespace kiln
