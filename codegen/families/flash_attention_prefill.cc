// Family flash_attention_prefill (see flash_attention_prefill.h).
#include "codegen/families/flash_attention_prefill.h"

#include "absl/strings/str_cat.h"
#include "codegen/families/attention.h"
#include "codegen/kernel_source.h"

namespace kiln {

std::optional<PrefillKernel> parse_prefill_kernel(std::string_view name) {
  if (name == "simple") return PrefillKernel::kSimple;
  if (name == "pipelined") return PrefillKernel::kPipelined;
  return std::nullopt;
}

std::string FlashAttentionPrefillSpec::key() const {
  std::vector<std::pair<std::string, int64_t>> params = {
      {"d", head_dim}, {"g", group}, {"q", tile_q}, {"kv", tile_kv}, {"w", warps}};
  if (kernel == PrefillKernel::kSimple) return spec_key(family(), dtype, params);
  params.push_back({"st", stages});
  return spec_key(family(), dtype, params, {"pipe"});
}

int64_t FlashAttentionPrefillSpec::dynamic_shared_bytes() const {
  if (kernel == PrefillKernel::kSimple) return 0;
  // kernels/flash_attention_prefill_pipelined.cuh: Q [tile_q][d+8], then `stages` x (K, V)
  // [tile_kv][d+8] (16-bit elements); the kernel traps when launched with less.
  return (tile_q + 2 * stages * tile_kv) * (head_dim + 8) * 2;
}

std::vector<EntryDecl> FlashAttentionPrefillSpec::entry() const {
  std::vector<EntryDecl> e = {{"kiln_t*", "out"},
                              {"const kiln_t*", "q"},
                              {"const kiln_t*", "k_cache"},
                              {"const kiln_t*", "v_cache"}};
  for (EntryDecl& m : attention_metadata_entry()) e.push_back(std::move(m));
  return e;
}

absl::StatusOr<KernelTemplate> FlashAttentionPrefillSpec::kernel_template() const {
  if (kernel == PrefillKernel::kPipelined) {
    // __launch_bounds__(threads, 1): without the explicit minimum, ptxas squeezes some
    // configurations into 96 or 128 registers by spilling (seen for head_dim 64 on sm_80 and
    // sm_90a); the occupancy this kernel gets is set by its shared memory anyway.
    KernelTemplate t{"flash_attention_prefill_pipelined.cuh", dtype, "", 32 * warps};
    t.call = absl::StrCat("kiln_k::flash_attention_prefill_pipelined<kiln_t, ", head_dim, ", ",
                          group, ", ", tile_q, ", ", tile_kv, ", ", warps, ", ", stages, ">");
    t.min_blocks = 1;
    return t;
  }
  KernelTemplate t{"flash_attention_prefill.cuh", dtype, "", 32 * warps};
  t.call = absl::StrCat("kiln_k::flash_attention_prefill<kiln_t, ", head_dim, ", ", group, ", ",
                        tile_q, ", ", tile_kv, ", ", warps, ">");
  return t;
}

LaunchRule FlashAttentionPrefillSpec::rule(const std::string& tokens, int64_t kv_heads) const {
  LaunchRule r;
  r.grid = {absl::StrCat("cdiv(", tokens, "*", group, ", ", tile_q, ") + S"),
            absl::StrCat(kv_heads), "1"};
  r.block = {absl::StrCat(32 * warps), "1", "1"};
  r.dynamic_shared_bytes = absl::StrCat(dynamic_shared_bytes());
  r.when = StepKind::kPrefill;
  return r;
}

}  // namespace kiln
