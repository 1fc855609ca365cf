// Family flash_attention_decode (kernels/flash_attention_decode.cuh): flash-decoding for steps of
// one query token per sequence, in one launch. The KV range of each (sequence, KV head) is cut
// into `splits` parts whose partial outputs and log-sum-exps go to fp32 workspaces; the split
// that finishes last (a counter per (sequence, KV head) in a zero-filled workspace) combines
// them. The split count is a launch-rule expression of S and K.
// Tuning knobs (node attributes, written by `kiln compile --tune` or by hand): decode_tile_kv,
// decode_warps, decode_stages, softmax ("lse" | "unified_max"), softmax_bound, split_kv (fixed) or
// split_blocks (the policy's target grid size). DecodeConfig holds them.
#pragma once

#include <memory>
#include <string>

#include "codegen/families/family.h"
#include "codegen/families/kv_cache.h"

namespace kiln {

/// The decode kernel's softmax: FlashAttention-2's per-split max with a log-sum-exp merge, or
/// FlashDecoding++'s unified max (one shared bound, an exponential-free merge, exact fallback).
enum class DecodeSoftmax { kLse, kUnifiedMax };
const char* decode_softmax_name(DecodeSoftmax s);  // "lse", "unified_max"

/// Everything a flash_attention node's attributes choose about its decode launches.
struct DecodeConfig {
  int64_t tile_kv = 16;  // KV rows per warp per pipeline stage
  int64_t warps = 4;
  int64_t stages = 2;  // cp.async tiles in flight per warp
  DecodeSoftmax softmax = DecodeSoftmax::kLse;
  double softmax_bound = 8.0;  // unified max: the shared bound phi, log2 units of scaled scores
  int64_t split_kv = 0;        // > 0: a fixed split count; 0: the occupancy policy
  int64_t split_blocks = 0;    // the policy's target grid size; 0: kDecodeTargetBlocks

  bool operator==(const DecodeConfig&) const = default;
};

/// Reads the tuning attributes of a flash_attention node (defaults for absent ones); an error
/// names the attribute with an invalid value (or a layout whose shared memory, for a `cache` of
/// this kind, exceeds what a block may have).
absl::StatusOr<DecodeConfig> decode_config(const Attributes& attrs, int64_t head_dim,
                                           KvCacheKind cache = KvCacheKind::kSameAsRows);
/// Writes `c` as the node attributes decode_config reads (every knob, so a dump shows them).
void set_decode_attrs(const DecodeConfig& c, Attributes& attrs);

struct FlashAttentionDecodeSpec final : KernelSpec {
  DType dtype = DType::kBF16;
  KvCacheKind cache = KvCacheKind::kSameAsRows;  // fp8e4m3: codes + scales, dequantized per tile
  int64_t head_dim = 0;
  int64_t group = 1;
  int64_t tile_kv = 16;
  int64_t warps = 4;
  int64_t stages = 2;
  bool unified = false;  // DecodeSoftmax::kUnifiedMax

  KernelFamily family() const override { return KernelFamily::kFlashAttentionDecode; }
  /// flash_attention_decode_<dt>_d<d>_g<g>_kv<tkv>_w<w>_st<stages>[_um][_fp8kv]
  std::string key() const override;
  std::vector<EntryDecl> entry() const override;
  absl::StatusOr<KernelTemplate> kernel_template() const override;
  /// Dynamic shared memory per block (the K/V rings; DecodeSmem in the kernel).
  int64_t shared_bytes() const;
};

/// The decode spec of a flash_attention node with these shapes and knobs.
std::shared_ptr<FlashAttentionDecodeSpec> make_decode_spec(DType dtype, KvCacheKind cache,
                                                           int64_t head_dim, int64_t group,
                                                           const DecodeConfig& c);

/// The most splits the decode kernel may use (the workspaces are sized for it) when the node
/// does not fix split_kv.
inline constexpr int64_t kMaxSplitKv = 32;

/// The default target grid size of the split policy: about 4 blocks per SM of a 132-SM H100/H200.
inline constexpr int64_t kDecodeTargetBlocks = 4 * 132;

/// The split count as an expression: `max_split` when fixed, else chosen per step so the grid
/// (S x kv_heads x splits) reaches `target_blocks` while each split keeps at least 256 KV rows of
/// the longest KV range, the symbol `kv_len` (K; the cascade suffix's is CK).
std::string decode_split_expr(int64_t max_split, bool fixed, int64_t kv_heads,
                              int64_t target_blocks = kDecodeTargetBlocks,
                              const std::string& kv_len = "K");

}  // namespace kiln
