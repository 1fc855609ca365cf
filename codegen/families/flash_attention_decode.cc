// Families flash_attention_decode and flash_attention_merge (see flash_attention_decode.h).
#include "codegen/families/flash_attention_decode.h"

#include "absl/strings/str_cat.h"
#include "codegen/families/attention.h"
#include "codegen/kernel_source.h"

namespace kiln {
namespace {

// About 4 blocks per SM of a 132-SM H100/H200. Measured on the H200 (bench/attention_bench.py,
// Llama-3-8B shapes): targets of 264 and 1056 blocks, and a fixed 8 splits, were each best for one
// of batch 1 / 16 / 64 and within ~15% elsewhere; this sits between them.
constexpr int64_t kDecodeTargetBlocks = 4 * 132;

}  // namespace

std::string FlashAttentionDecodeSpec::key() const {
  return spec_key(family(), dtype, {{"d", head_dim}, {"g", group}, {"kv", tile_kv}, {"w", warps}});
}

std::vector<EntryDecl> FlashAttentionDecodeSpec::entry() const {
  std::vector<EntryDecl> e = {{"float*", "o_partial"},
                              {"float*", "lse_partial"},
                              {"const kiln_t*", "q"},
                              {"const kiln_t*", "k_cache"},
                              {"const kiln_t*", "v_cache"}};
  for (EntryDecl& m : attention_metadata_entry()) e.push_back(std::move(m));
  return e;
}

absl::StatusOr<std::string> FlashAttentionDecodeSpec::source() const {
  return instantiate(*this, "flash_attention_decode.cuh", dtype, "", 32 * warps,
                     absl::StrCat("kiln_k::flash_attention_decode<kiln_t, ", head_dim, ", ", group,
                                  ", ", tile_kv, ", ", warps, ">"));
}

std::string FlashAttentionMergeSpec::key() const {
  return spec_key(family(), dtype, {{"d", head_dim}});
}

std::vector<EntryDecl> FlashAttentionMergeSpec::entry() const {
  return {
      {"kiln_t*", "out"},          {"const float*", "o_partial"}, {"const float*", "lse_partial"},
      {"const int*", "qo_indptr"}, {"int", "num_seqs"},           {"int", "num_q_heads"},
      {"int", "num_splits"}};
}

absl::StatusOr<std::string> FlashAttentionMergeSpec::source() const {
  return instantiate(*this, "flash_attention_decode.cuh", dtype, "", head_dim,
                     absl::StrCat("kiln_k::flash_attention_decode_merge<kiln_t, ", head_dim, ">"));
}

std::string decode_split_expr(int64_t max_split, bool fixed, int64_t kv_heads) {
  if (fixed) return absl::StrCat(max_split);
  // 8 KV heads: batch 1 at 32k gets 32 splits, batch 64 at 4k gets 2.
  return absl::StrCat("min(", max_split, ", max(1, min(cdiv(K, 256), cdiv(", kDecodeTargetBlocks,
                      ", S*", kv_heads, "))))");
}

}  // namespace kiln
