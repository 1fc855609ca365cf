// Family flash_attention_prefill (kernels/flash_attention_prefill.cuh): FlashAttention-2 over the
// ragged batch and the paged cache, causal, online-softmax rescaling, tensor cores (bf16/f16).
// Each block takes tile_q rows of (token, query head of one KV group) of one sequence.
#pragma once

#include "codegen/families/family.h"

namespace kiln {

struct FlashAttentionPrefillSpec final : KernelSpec {
  DType dtype = DType::kBF16;
  int64_t head_dim = 0;
  int64_t group = 1;  // query heads per KV head (GQA)
  int64_t tile_q = 64;
  int64_t tile_kv = 64;
  int64_t warps = 4;

  KernelFamily family() const override { return KernelFamily::kFlashAttentionPrefill; }
  std::string key() const override;  // flash_attention_prefill_<dt>_d<d>_g<g>_q<tq>_kv<tkv>_w<w>
  std::vector<EntryDecl> entry() const override;
  absl::StatusOr<std::string> source() const override;

  /// Grid: enough query tiles for any split of T tokens over S sequences (each sequence wastes at
  /// most one partial tile), times the KV heads.
  LaunchRule rule(const std::string& tokens, int64_t kv_heads) const;
};

}  // namespace kiln
