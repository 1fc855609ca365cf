// The one place that maps HF (safetensors) and GGUF tensor names to kiln's parameter names.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace kiln {

/// Where a tensor name comes from.
enum class WeightNaming { kHuggingFace, kGguf };

/// Maps a checkpoint tensor name to kiln's canonical parameter name:
///   embed, final_norm, lm_head,
///   layers.{i}.{attn_norm, q_proj, k_proj, v_proj, o_proj, q_bias, k_bias, v_bias,
///               mlp_norm, gate_proj, up_proj, down_proj}.
/// Returns nullopt for tensors kiln does not use (e.g. GGUF `rope_freqs.weight`, HF
/// `model.layers.{i}.self_attn.rotary_emb.inv_freq`); loaders skip those without error, and the
/// model builder reports any *required* parameter that is missing.
std::optional<std::string> canonical_weight_name(WeightNaming naming, std::string_view name);

}  // namespace kiln
