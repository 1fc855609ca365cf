// Family flash_attention_prefill (see flash_attention_prefill.h).
#include "codegen/families/flash_attention_prefill.h"

#include "absl/strings/str_cat.h"
#include "codegen/families/attention.h"
#include "codegen/kernel_source.h"

namespace kiln {

std::string FlashAttentionPrefillSpec::key() const {
  return spec_key(family(), dtype,
                  {{"d", head_dim}, {"g", group}, {"q", tile_q}, {"kv", tile_kv}, {"w", warps}});
}

std::vector<EntryDecl> FlashAttentionPrefillSpec::entry() const {
  std::vector<EntryDecl> e = {{"kiln_t*", "out"},
                              {"const kiln_t*", "q"},
                              {"const kiln_t*", "k_cache"},
                              {"const kiln_t*", "v_cache"}};
  for (EntryDecl& m : attention_metadata_entry()) e.push_back(std::move(m));
  return e;
}

absl::StatusOr<std::string> FlashAttentionPrefillSpec::source() const {
  return instantiate(*this, "flash_attention_prefill.cuh", dtype, "", 32 * warps,
                     absl::StrCat("kiln_k::flash_attention_prefill<kiln_t, ", head_dim, ", ", group,
                                  ", ", tile_q, ", ", tile_kv, ", ", warps, ">"));
}

LaunchRule FlashAttentionPrefillSpec::rule(const std::string& tokens, int64_t kv_heads) const {
  LaunchRule r;
  r.grid = {absl::StrCat("cdiv(", tokens, "*", group, ", ", tile_q, ") + S"),
            absl::StrCat(kv_heads), "1"};
  r.block = {absl::StrCat(32 * warps), "1", "1"};
  r.when = StepKind::kPrefill;
  return r;
}

}  // namespace kiln
