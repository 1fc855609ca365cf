// Families flash_attention_decode and flash_attention_merge (kernels/flash_attention_decode.cuh):
// flash-decoding for steps of one query token per sequence. The KV range of each (sequence, KV
// head) is cut into `splits` parts whose partial outputs and log-sum-exps go to fp32 workspaces;
// the merge kernel combines them. The split count is a launch-rule expression of S and K.
#pragma once

#include <string>

#include "codegen/families/family.h"

namespace kiln {

struct FlashAttentionDecodeSpec final : KernelSpec {
  DType dtype = DType::kBF16;
  int64_t head_dim = 0;
  int64_t group = 1;
  int64_t tile_kv = 16;
  int64_t warps = 4;

  KernelFamily family() const override { return KernelFamily::kFlashAttentionDecode; }
  std::string key() const override;  // flash_attention_decode_<dt>_d<d>_g<g>_kv<tkv>_w<w>
  std::vector<EntryDecl> entry() const override;
  absl::StatusOr<std::string> source() const override;
};

struct FlashAttentionMergeSpec final : KernelSpec {
  DType dtype = DType::kBF16;
  int64_t head_dim = 0;

  KernelFamily family() const override { return KernelFamily::kFlashAttentionMerge; }
  std::string key() const override;  // flash_attention_merge_<dt>_d<d>
  std::vector<EntryDecl> entry() const override;
  absl::StatusOr<std::string> source() const override;
};

/// The most splits the decode kernel may use (the workspaces are sized for it) when the node
/// does not fix split_kv.
inline constexpr int64_t kMaxSplitKv = 32;

/// The split count as an expression: `max_split` when fixed, else chosen per step so the grid
/// fills the GPU while each split keeps at least 256 KV positions.
std::string decode_split_expr(int64_t max_split, bool fixed, int64_t kv_heads);

}  // namespace kiln
