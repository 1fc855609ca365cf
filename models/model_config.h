// ModelConfig: the one place where HF config.json keys and GGUF metadata are normalized into the
// hyper-parameters of a Llama-family decoder (Llama, Mistral, Qwen2, SmolLM2).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ir/dtype.h"
#include "models/gguf.h"
#include "models/weight_names.h"

namespace kiln {

/// Llama-3-style frequency-dependent RoPE scaling (HF rope_scaling {rope_type: "llama3"}).
struct RopeScaling {
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_positions = 8192;
  bool operator==(const RopeScaling&) const = default;
};

struct ModelConfig {
  std::string architecture;         // normalized family: "llama" (also Mistral, SmolLM2) or "qwen2"
  std::string source_architecture;  // as the checkpoint names it: "LlamaForCausalLM", "llama", ...
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // < num_heads for grouped-query attention
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
  int64_t max_context = 0;  // positions kiln serves (the trained context, or the sliding window)
  /// Mistral-style sliding-window attention (0: none). kiln computes full causal attention, which
  /// equals windowed attention while the context stays within the window, so max_context is
  /// capped at the window and `trained_context` keeps what the checkpoint declared.
  int64_t sliding_window = 0;
  int64_t trained_context = 0;
  double rms_eps = 1e-5;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;
  /// RoPE pairs adjacent dims (2i, 2i+1) instead of rotate-half (i, i + d/2). True for llama
  /// GGUFs: llama.cpp's converter permutes q/k rows so that its interleaved rope applies.
  bool rope_interleaved = false;
  bool tie_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry biases (Qwen2)
  int32_t bos_id = -1;
  std::vector<int32_t> eos_ids;
  DType weights_dtype = DType::kBF16;  // the checkpoint's float dtype (torch_dtype)

  /// Checks the hyper-parameters are consistent and in range: sizes positive and below caps far
  /// above real models, heads divide, rms eps and rope theta finite, token ids in the vocabulary.
  absl::Status validate() const;
  /// One line: "llama: 30 layers, hidden 576, heads 9/3 x 64, ffn 1536, vocab 49152, ctx 8192".
  std::string summary() const;
};

/// From an HF `config.json` (text; `source` names it in errors). Every field is read typed: a
/// missing, null or wrong-typed field gets an error naming `source` and the field. Unknown
/// architectures get an error naming them and the supported ones; config variants kiln does not
/// implement (rope_scaling linear/dynamic/yarn, Llama attention_bias, mlp_bias, hidden_act other
/// than silu) are refused by name.
absl::StatusOr<ModelConfig> model_config_from_hf_json(const std::string& json_text,
                                                      const std::string& source = "config.json");
/// From GGUF metadata (general.architecture llama or qwen2), plus the `rope_freqs.weight`
/// tensor when the file has one (llama3 rope scaling as llama.cpp stores it). `block_count` must
/// match the blk.<i> tensors the file holds.
absl::StatusOr<ModelConfig> model_config_from_gguf(const GgufFile& gguf);

/// Checks a declared layer count (GGUF block_count, HF num_hidden_layers) against the layers whose
/// tensors a checkpoint holds, before anything is sized by it. The error is a phrase to follow
/// the field's name: "is 2147483648 but the checkpoint holds tensors for 2 layers".
absl::Status check_layer_count(int64_t declared, WeightNaming naming,
                               absl::Span<const std::string_view> tensor_names);

/// Architectures kiln supports, for error messages.
const std::vector<std::string>& supported_architectures();

}  // namespace kiln
