// Family flash_attention_decode (see flash_attention_decode.h).
#include "codegen/families/flash_attention_decode.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "codegen/families/attention.h"
#include "codegen/kernel_source.h"

namespace kiln {

const char* decode_softmax_name(DecodeSoftmax s) {
  return s == DecodeSoftmax::kUnifiedMax ? "unified_max" : "lse";
}

absl::StatusOr<DecodeConfig> decode_config(const Attributes& attrs, int64_t head_dim,
                                           KvCacheKind cache) {
  DecodeConfig c;
  auto get_int = [&](const char* name, int64_t& field) -> absl::Status {
    if (!attrs.has(name)) return absl::OkStatus();
    absl::StatusOr<int64_t> v = attrs.get_int(name);
    if (!v.ok()) return v.status();
    field = *v;
    return absl::OkStatus();
  };
  for (auto [name, field] : {std::pair<const char*, int64_t*>{"decode_tile_kv", &c.tile_kv},
                             {"decode_warps", &c.warps},
                             {"decode_stages", &c.stages},
                             {"split_kv", &c.split_kv},
                             {"split_blocks", &c.split_blocks}}) {
    if (absl::Status s = get_int(name, *field); !s.ok()) return s;
  }
  if (attrs.has("softmax")) {
    absl::StatusOr<std::string> s = attrs.get_string("softmax");
    if (!s.ok()) return s.status();
    if (*s == "unified_max") {
      c.softmax = DecodeSoftmax::kUnifiedMax;
    } else if (*s != "lse") {
      return absl::InvalidArgumentError(
          absl::StrCat("flash_attention softmax = \"", *s, "\": expected \"lse\" or \"unified_max\""));
    }
  }
  if (attrs.has("softmax_bound")) {
    absl::StatusOr<double> b = attrs.get_float("softmax_bound");
    if (!b.ok()) return b.status();
    if (!(*b > -1e4 && *b < 1e4)) {
      return absl::InvalidArgumentError("flash_attention softmax_bound must be finite, |b| < 1e4");
    }
    c.softmax_bound = *b;
  }
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("flash_attention decode config: ", what));
  };
  if (c.tile_kv != 16 && c.tile_kv != 32 && c.tile_kv != 64) return bad("decode_tile_kv must be 16, 32 or 64");
  if (c.warps != 1 && c.warps != 2 && c.warps != 4 && c.warps != 8) return bad("decode_warps must be 1, 2, 4 or 8");
  if (c.stages < 1 || c.stages > 4) return bad("decode_stages must be in [1, 4]");
  if (c.split_kv < 0 || c.split_kv > 256) return bad("split_kv must be in [1, 256]");
  if (c.split_blocks < 0 || c.split_blocks > 1 << 20) return bad("split_blocks must be in [1, 2^20]");
  FlashAttentionDecodeSpec probe;
  probe.cache = cache;
  probe.head_dim = head_dim, probe.tile_kv = c.tile_kv, probe.warps = c.warps, probe.stages = c.stages;
  // The H100/H200 opt-in limit per block; above it the kernel cannot launch anywhere.
  if (probe.shared_bytes() > 227 * 1024) {
    return bad(absl::StrCat("decode_tile_kv x decode_warps x decode_stages needs ",
                            probe.shared_bytes(), " bytes of shared memory (> 227 KB)"));
  }
  return c;
}

void set_decode_attrs(const DecodeConfig& c, Attributes& attrs) {
  attrs.set("decode_tile_kv", c.tile_kv);
  attrs.set("decode_warps", c.warps);
  attrs.set("decode_stages", c.stages);
  attrs.set("softmax", std::string(decode_softmax_name(c.softmax)));
  if (c.softmax == DecodeSoftmax::kUnifiedMax) attrs.set("softmax_bound", c.softmax_bound);
  if (c.split_kv > 0) {
    attrs.set("split_kv", c.split_kv);
    attrs.erase("split_blocks");
  } else {
    attrs.erase("split_kv");
    attrs.set("split_blocks", c.split_blocks > 0 ? c.split_blocks : kDecodeTargetBlocks);
  }
}

std::string FlashAttentionDecodeSpec::key() const {
  std::vector<std::string> tags;
  if (unified) tags.push_back("um");
  for (std::string& t : kv_cache_tags(cache)) tags.push_back(std::move(t));
  return spec_key(family(), dtype,
                  {{"d", head_dim}, {"g", group}, {"kv", tile_kv}, {"w", warps}, {"st", stages}},
                  tags);
}

std::vector<EntryDecl> FlashAttentionDecodeSpec::entry() const {
  const bool fp8 = cache == KvCacheKind::kFp8E4M3;
  std::vector<EntryDecl> e = {{"kiln_t*", "out"},
                              {"float*", "o_partial"},
                              {"float*", "lse_partial"},
                              {"int*", "split_counters"},
                              {"const kiln_t*", "q"},
                              {fp8 ? "const kiln_kv_t*" : "const kiln_t*", "k_cache"},
                              {fp8 ? "const kiln_kv_t*" : "const kiln_t*", "v_cache"}};
  if (fp8) {
    e.push_back({"const float*", "k_scales"});
    e.push_back({"const float*", "v_scales"});
  }
  for (EntryDecl& m : attention_metadata_entry()) e.push_back(std::move(m));
  e.push_back({"float", "phi"});
  return e;
}

int64_t FlashAttentionDecodeSpec::shared_bytes() const {
  // DecodeSmem<T, C, D, TILE_KV, WARPS, STAGES>::kBytes (kernels/flash_attention_decode.cuh).
  const int64_t stride = head_dim + 8;
  const int64_t tile = tile_kv * stride * 2;  // one 16-bit K (or V) tile
  int64_t tiles = stages * warps * 2 * tile;
  if (cache == KvCacheKind::kFp8E4M3) {
    // Rings of codes and scales, then each warp's dequantized K and V tiles.
    tiles = stages * warps * (2 * tile_kv * head_dim + 2 * tile_kv * 4) + warps * 2 * tile;
  }
  const int64_t merge = warps * 16 * head_dim * 4;
  const int64_t q = 16 * stride * 2;
  return std::max({tiles, merge, q});
}

absl::StatusOr<KernelTemplate> FlashAttentionDecodeSpec::kernel_template() const {
  const bool fp8 = cache == KvCacheKind::kFp8E4M3;
  KernelTemplate t{"flash_attention_decode.cuh", dtype, kv_cache_typedef(cache), 32 * warps};
  t.call = absl::StrCat("kiln_k::flash_attention_decode<kiln_t, ", fp8 ? "kiln_kv_t" : "kiln_t",
                        ", ", head_dim, ", ", group, ", ", tile_kv, ", ", warps, ", ", stages, ", ",
                        unified ? "true" : "false", ">");
  // A cache of kiln_t has no scales: the template's scale pointers are null.
  t.call_args = absl::StrCat(
      "out, o_partial, lse_partial, split_counters, q, k_cache, v_cache, ",
      fp8 ? "k_scales, v_scales" : "(const float*)0, (const float*)0",
      ", positions, qo_indptr, kv_page_indptr, kv_page_indices, kv_last_page_len, num_seqs, "
      "num_kv_heads, page_size, scale, phi");
  return t;
}

std::shared_ptr<FlashAttentionDecodeSpec> make_decode_spec(DType dtype, KvCacheKind cache,
                                                           int64_t head_dim, int64_t group,
                                                           const DecodeConfig& c) {
  auto s = std::make_shared<FlashAttentionDecodeSpec>();
  s->dtype = dtype;
  s->cache = cache;
  s->head_dim = head_dim;
  s->group = group;
  s->tile_kv = c.tile_kv;
  s->warps = c.warps;
  s->stages = c.stages;
  s->unified = c.softmax == DecodeSoftmax::kUnifiedMax;
  return s;
}

std::string decode_split_expr(int64_t max_split, bool fixed, int64_t kv_heads,
                              int64_t target_blocks, const std::string& kv_len) {
  if (fixed) return absl::StrCat(max_split);
  // With the default target and 8 KV heads: batch 1 at 32k gets 32 splits, batch 64 at 4k gets 2.
  return absl::StrCat("min(", max_split, ", max(1, min(cdiv(", kv_len, ", 256), cdiv(",
                      target_blocks, ", S*", kv_heads, "))))");
}

}  // namespace kiln
