// Family flash_attention_prefill (kernels/flash_attention_prefill.cuh): FlashAttention-2 over the
// ragged batch and the paged cache, causal, online-softmax rescaling, tensor cores (bf16/f16).
// Each block takes tile_q rows of (token, query head of one KV group) of one sequence.
//
// Three kernels compute the same result over the same rows (the op's `prefill_kernel` attribute
// picks one):
//  * kSimple ("simple", the default until the pipelined one is confirmed on a GPU): one K/V
//    stage in 48 KB of static shared memory, scalar fragment loads.
//  * kPipelined ("pipelined", kernels/flash_attention_prefill_pipelined.cuh): FlashAttention-2
//    class for sm_80+: a `stages`-deep cp.async K/V pipeline in dynamic shared memory, ldmatrix
//    fragment loads, causal tile skipping, only diagonal tiles masked.
//  * kHopper ("hopper", kernels/flash_attention_prefill_hopper.cuh): FlashAttention-3 class for
//    sm_90a only (it traps elsewhere): wgmma from shared memory, a producer warpgroup filling a
//    `stages`-deep mbarrier ring, two consumer warpgroups of 64 query rows in ping-pong; 128-row Q
//    tiles, 384 threads; head_dim 64 or 128, a 16-bit cache (fp8e4m3 is refused). Not the default
//    until its GPU tests pass; the autotuner may pick it on sm_90a.
#pragma once

#include <optional>
#include <string_view>

#include "codegen/families/family.h"
#include "codegen/families/kv_cache.h"

namespace kiln {

enum class PrefillKernel : uint8_t { kSimple, kPipelined, kHopper };

/// "simple" / "pipelined" / "hopper"; nullopt for another name.
std::optional<PrefillKernel> parse_prefill_kernel(std::string_view name);

struct FlashAttentionPrefillSpec final : KernelSpec {
  PrefillKernel kernel = PrefillKernel::kSimple;
  DType dtype = DType::kBF16;
  KvCacheKind cache = KvCacheKind::kSameAsRows;  // fp8e4m3: codes + scales, dequantized per tile
  int64_t head_dim = 0;
  int64_t group = 1;  // query heads per KV head (GQA)
  int64_t tile_q = 64;
  int64_t tile_kv = 64;
  int64_t warps = 4;
  int64_t stages = 2;  // K/V tile buffers in flight (kPipelined, kHopper)

  KernelFamily family() const override { return KernelFamily::kFlashAttentionPrefill; }
  /// flash_attention_prefill_<dt>_d<d>_g<g>_q<tq>_kv<tkv>_w<w>, + "_st<stages>_pipe" for
  /// kPipelined, "_st<stages>_hopper" for kHopper (whose tile_q is 128 and warps 12), + "_fp8kv"
  /// for an fp8e4m3 cache.
  std::string key() const override;
  std::vector<EntryDecl> entry() const override;
  absl::StatusOr<KernelTemplate> kernel_template() const override;

  /// Threads of one block: 384 (3 warpgroups) for kHopper, 32 * warps otherwise.
  int64_t threads() const;
  /// Dynamic shared memory of one block (0 for kSimple, whose tiles are static).
  int64_t dynamic_shared_bytes() const;

  /// Grid: enough query tiles for any split of T tokens over S sequences (each sequence wastes at
  /// most one partial tile), times the KV heads.
  LaunchRule rule(const std::string& tokens, int64_t kv_heads) const;
};

}  // namespace kiln
