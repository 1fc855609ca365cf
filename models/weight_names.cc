// HF / GGUF -> kiln parameter names (tables, plus the per-layer prefix split).
#include "models/weight_names.h"

#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace kiln {
namespace {

struct NamePair {
  std::string_view source;
  std::string_view canonical;
};

// Per-layer suffixes after "model.layers.{i}." (HF) and "blk.{i}." (GGUF).
constexpr NamePair kHfLayer[] = {
    {"input_layernorm.weight", "attn_norm"},
    {"self_attn.q_proj.weight", "q_proj"},
    {"self_attn.k_proj.weight", "k_proj"},
    {"self_attn.v_proj.weight", "v_proj"},
    {"self_attn.o_proj.weight", "o_proj"},
    {"self_attn.q_proj.bias", "q_bias"},
    {"self_attn.k_proj.bias", "k_bias"},
    {"self_attn.v_proj.bias", "v_bias"},
    {"post_attention_layernorm.weight", "mlp_norm"},
    {"mlp.gate_proj.weight", "gate_proj"},
    {"mlp.up_proj.weight", "up_proj"},
    {"mlp.down_proj.weight", "down_proj"},
};
constexpr NamePair kGgufLayer[] = {
    {"attn_norm.weight", "attn_norm"}, {"attn_q.weight", "q_proj"},
    {"attn_k.weight", "k_proj"},       {"attn_v.weight", "v_proj"},
    {"attn_output.weight", "o_proj"},  {"attn_q.bias", "q_bias"},
    {"attn_k.bias", "k_bias"},         {"attn_v.bias", "v_bias"},
    {"ffn_norm.weight", "mlp_norm"},   {"ffn_gate.weight", "gate_proj"},
    {"ffn_up.weight", "up_proj"},      {"ffn_down.weight", "down_proj"},
};
constexpr NamePair kHfGlobal[] = {
    {"model.embed_tokens.weight", "embed"},
    {"model.norm.weight", "final_norm"},
    {"lm_head.weight", "lm_head"},
};
constexpr NamePair kGgufGlobal[] = {
    {"token_embd.weight", "embed"},
    {"output_norm.weight", "final_norm"},
    {"output.weight", "lm_head"},
};

template <size_t N>
std::optional<std::string_view> lookup(const NamePair (&table)[N], std::string_view name) {
  for (const NamePair& p : table) {
    if (p.source == name) return p.canonical;
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> canonical_weight_name(WeightNaming naming, std::string_view name) {
  const bool hf = naming == WeightNaming::kHuggingFace;
  if (auto g = hf ? lookup(kHfGlobal, name) : lookup(kGgufGlobal, name)) return std::string(*g);

  const std::string_view prefix = hf ? "model.layers." : "blk.";
  if (name.substr(0, prefix.size()) != prefix) return std::nullopt;
  name.remove_prefix(prefix.size());
  const size_t dot = name.find('.');
  if (dot == std::string_view::npos || dot == 0) return std::nullopt;
  const std::string_view index = name.substr(0, dot);
  // Only plain decimal layer numbers ("07" or "+1" would alias another layer's name).
  if (index.size() > 1 && index[0] == '0') return std::nullopt;
  for (char ch : index) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(ch))) return std::nullopt;
  }
  if (index.size() > 9) return std::nullopt;  // no model has a billion layers
  const std::string_view suffix = name.substr(dot + 1);
  auto c = hf ? lookup(kHfLayer, suffix) : lookup(kGgufLayer, suffix);
  if (!c) return std::nullopt;
  return absl::StrCat("layers.", absl::string_view(index.data(), index.size()), ".",
                      absl::string_view(c->data(), c->size()));
}

}  // namespace kiln
