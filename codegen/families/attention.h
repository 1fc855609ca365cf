// The flash_attention op (kernels/attention_common.cuh): per step, kv_append writes the new K/V
// rows into the paged cache, then prefill steps run flash_attention_prefill and decode steps run
// flash-decoding (flash_attention_decode: split-KV partials, merged by the last split). This file
// holds the op's lowering and the paged-metadata parameters the attention entries share.
#pragma once

#include <vector>

#include "codegen/families/family.h"

namespace kiln {

/// The paged-batch parameters that close the prefill and decode entries, in order.
std::vector<EntryDecl> attention_metadata_entry();

/// flash_attention(q, k, v, k_cache, v_cache, positions, slot_mapping, qo_indptr,
/// kv_page_indptr, kv_page_indices, kv_last_page_len) {scale, tile_q, tile_kv, warps, split_kv,
/// prefill_kernel ("simple" | "pipelined" | "hopper"), stages}.
absl::Status lower_flash_attention(const Node& node, LoweringContext& ctx);

}  // namespace kiln
