// build_llama: a Llama-family decoder's step graph in **primitive** ops over a ragged batch with
// a paged KV cache. The passes must find the RMSNorm, RoPE and attention patterns in it.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "ir/graph.h"
#include "models/model_config.h"

namespace kiln {

/// Compile-time bounds of one step (the symbols' upper bounds) and the KV layout.
struct StepLimits {
  int64_t max_tokens = 2048;         // T: tokens in one step (prefill chunk + decodes)
  int64_t max_seqs = 64;             // S: sequences in one step
  int64_t max_context = 0;           // K: longest KV length; 0 = the model's context length
  int64_t page_size = 16;            // tokens per KV page
  int64_t max_pool_pages = 1 << 20;  // NP: pages in the pool (the actual count is fixed at load)
  DType dtype = DType::kBF16;        // activations and weights (and the KV cache by default)
  /// The KV cache's dtype when it is not `dtype`: fp8e4m3 (`kiln compile --kv-dtype fp8e4m3`)
  /// stores e4m3 codes with per-(slot, KV head) scales, dequantized by attention.
  std::optional<DType> kv_dtype;

  DType cache_dtype() const { return kv_dtype.value_or(dtype); }
};

/// Graph inputs, in this order:
///   %tokens i32[T], %positions i32[T], %slot_mapping i32[T], %qo_indptr i32[S+1],
///   %kv_page_indptr i32[S+1], %kv_page_indices i32[P], %kv_last_page_len i32[S],
///   %k_cache.<l> and %v_cache.<l> cache_dtype[NP, page_size, kv_heads, head_dim] for each layer
///   l, and with an fp8e4m3 cache %k_scales.<l> and %v_scales.<l> f32[NP, page_size, kv_heads]
///   after them (ir/op_kind.h: the caches' scale arrays).
/// Params: embed, layers.<l>.{attn_norm, q_proj, k_proj, v_proj, [q_bias, k_bias, v_bias],
///   o_proj, mlp_norm, gate_proj, up_proj, down_proj}, final_norm, [lm_head].
/// Output: `logits` f32[S, vocab] for the last token of each sequence.
absl::Status build_llama(const ModelConfig& config, const StepLimits& limits, Graph& graph);

}  // namespace kiln
