// Family flash_attention_prefill (see flash_attention_prefill.h).
#include "codegen/families/flash_attention_prefill.h"

#include "absl/strings/str_cat.h"
#include "codegen/families/attention.h"
#include "codegen/kernel_source.h"

namespace kiln {

std::optional<PrefillKernel> parse_prefill_kernel(std::string_view name) {
  if (name == "simple") return PrefillKernel::kSimple;
  if (name == "pipelined") return PrefillKernel::kPipelined;
  if (name == "hopper") return PrefillKernel::kHopper;
  return std::nullopt;
}

std::string FlashAttentionPrefillSpec::key() const {
  std::vector<std::pair<std::string, int64_t>> params = {
      {"d", head_dim}, {"g", group}, {"q", tile_q}, {"kv", tile_kv}, {"w", warps}};
  std::vector<std::string> tags;
  if (kernel == PrefillKernel::kPipelined) {
    params.push_back({"st", stages});
    tags.push_back("pipe");
  } else if (kernel == PrefillKernel::kHopper) {
    params.push_back({"st", stages});
    tags.push_back("hopper");
  }
  for (std::string& t : kv_cache_tags(cache)) tags.push_back(std::move(t));
  return spec_key(family(), dtype, params, tags);
}

int64_t FlashAttentionPrefillSpec::threads() const {
  return kernel == PrefillKernel::kHopper ? 384 : 32 * warps;
}

int64_t FlashAttentionPrefillSpec::dynamic_shared_bytes() const {
  if (kernel == PrefillKernel::kSimple) return 0;
  if (kernel == PrefillKernel::kHopper) {
    // kernels/flash_attention_prefill_hopper.cuh (hopper_prefill_smem_bytes): 1024 bytes to align
    // the 128-byte-swizzled tiles, Q [128][d], `stages` x (K, V) [tile_kv][d] of 16-bit elements,
    // and 3 mbarriers per stage; the kernel traps when launched with less.
    return 1024 + 128 * head_dim * 2 + stages * 2 * tile_kv * head_dim * 2 + 3 * stages * 8;
  }
  // kernels/flash_attention_prefill_pipelined.cuh (prefill_pipelined_smem_bytes): Q
  // [tile_q][d+8], then `stages` x (K, V) [tile_kv][d+8] (16-bit elements), or for an fp8e4m3
  // cache `stages` x (K, V codes [tile_kv][d] bytes, K, V scales [tile_kv] f32) and one
  // dequantized (K, V) [tile_kv][d+8]; the kernel traps when launched with less.
  const int64_t tile = tile_kv * (head_dim + 8) * 2;
  const int64_t q = tile_q * (head_dim + 8) * 2;
  if (cache == KvCacheKind::kFp8E4M3) {
    return q + stages * (2 * tile_kv * head_dim + 2 * tile_kv * 4) + 2 * tile;
  }
  return q + stages * 2 * tile;
}

std::vector<EntryDecl> FlashAttentionPrefillSpec::entry() const {
  const bool fp8 = cache == KvCacheKind::kFp8E4M3;
  std::vector<EntryDecl> e = {{"kiln_t*", "out"},
                              {"const kiln_t*", "q"},
                              {fp8 ? "const kiln_kv_t*" : "const kiln_t*", "k_cache"},
                              {fp8 ? "const kiln_kv_t*" : "const kiln_t*", "v_cache"}};
  if (fp8) {
    e.push_back({"const float*", "k_scales"});
    e.push_back({"const float*", "v_scales"});
  }
  for (EntryDecl& m : attention_metadata_entry()) e.push_back(std::move(m));
  return e;
}

absl::StatusOr<KernelTemplate> FlashAttentionPrefillSpec::kernel_template() const {
  const bool fp8 = cache == KvCacheKind::kFp8E4M3;
  const char* cache_t = fp8 ? "kiln_kv_t" : "kiln_t";
  // A cache of kiln_t has no scales: the template's scale pointers are null.
  const std::string call_args = absl::StrCat(
      "out, q, k_cache, v_cache, ", fp8 ? "k_scales, v_scales" : "(const float*)0, (const float*)0",
      ", positions, qo_indptr, kv_page_indptr, kv_page_indices, kv_last_page_len, num_seqs, "
      "num_kv_heads, page_size, scale");
  if (kernel == PrefillKernel::kHopper) {
    // __launch_bounds__(384, 1): setmaxnreg moves registers between the producer and consumer
    // warpgroups only when the kernel starts with a register cap (65536 / 384 -> 168).
    KernelTemplate t{"flash_attention_prefill_hopper.cuh", dtype, kv_cache_typedef(cache),
                     threads()};
    t.call = absl::StrCat("kiln_k::flash_attention_prefill_hopper<kiln_t, ", cache_t, ", ",
                          head_dim, ", ", group, ", ", tile_kv, ", ", stages, ">");
    t.call_args = call_args;
    t.min_blocks = 1;
    return t;
  }
  if (kernel == PrefillKernel::kPipelined) {
    // __launch_bounds__(threads, 1): without the explicit minimum, ptxas squeezes some
    // configurations into 96 or 128 registers by spilling (seen for head_dim 64 on sm_80 and
    // sm_90a); the occupancy this kernel gets is set by its shared memory anyway.
    KernelTemplate t{"flash_attention_prefill_pipelined.cuh", dtype, kv_cache_typedef(cache),
                     32 * warps};
    t.call =
        absl::StrCat("kiln_k::flash_attention_prefill_pipelined<kiln_t, ", cache_t, ", ", head_dim,
                     ", ", group, ", ", tile_q, ", ", tile_kv, ", ", warps, ", ", stages, ">");
    t.call_args = call_args;
    t.min_blocks = 1;
    return t;
  }
  KernelTemplate t{"flash_attention_prefill.cuh", dtype, kv_cache_typedef(cache), 32 * warps};
  t.call = absl::StrCat("kiln_k::flash_attention_prefill<kiln_t, ", cache_t, ", ", head_dim, ", ",
                        group, ", ", tile_q, ", ", tile_kv, ", ", warps, ">");
  t.call_args = call_args;
  return t;
}

LaunchRule FlashAttentionPrefillSpec::rule(const std::string& tokens, int64_t kv_heads) const {
  LaunchRule r;
  r.grid = {absl::StrCat("cdiv(", tokens, "*", group, ", ", tile_q, ") + S"),
            absl::StrCat(kv_heads), "1"};
  r.block = {absl::StrCat(threads()), "1", "1"};
  r.dynamic_shared_bytes = absl::StrCat(dynamic_shared_bytes());
  r.when = StepKind::kPrefill;
  return r;
}

}  // namespace kiln
