// HF and GGUF tensor names map to the same kiln parameter names.
#include "models/weight_names.h"

#include <gtest/gtest.h>

namespace kiln {
namespace {

std::string hf(std::string_view n) {
  return canonical_weight_name(WeightNaming::kHuggingFace, n).value_or("<none>");
}
std::string gg(std::string_view n) {
  return canonical_weight_name(WeightNaming::kGguf, n).value_or("<none>");
}

TEST(WeightNames, HuggingFaceAndGgufAgree) {
  const std::pair<std::string, std::string> pairs[] = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"},
      {"model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"},
      {"model.layers.12.self_attn.q_proj.weight", "blk.12.attn_q.weight"},
      {"model.layers.3.self_attn.k_proj.weight", "blk.3.attn_k.weight"},
      {"model.layers.3.self_attn.v_proj.weight", "blk.3.attn_v.weight"},
      {"model.layers.3.self_attn.o_proj.weight", "blk.3.attn_output.weight"},
      {"model.layers.3.self_attn.q_proj.bias", "blk.3.attn_q.bias"},
      {"model.layers.3.self_attn.k_proj.bias", "blk.3.attn_k.bias"},
      {"model.layers.3.self_attn.v_proj.bias", "blk.3.attn_v.bias"},
      {"model.layers.3.post_attention_layernorm.weight", "blk.3.ffn_norm.weight"},
      {"model.layers.3.mlp.gate_proj.weight", "blk.3.ffn_gate.weight"},
      {"model.layers.3.mlp.up_proj.weight", "blk.3.ffn_up.weight"},
      {"model.layers.3.mlp.down_proj.weight", "blk.3.ffn_down.weight"},
  };
  for (const auto& [h, g] : pairs) {
    EXPECT_NE(hf(h), "<none>") << h;
    EXPECT_EQ(hf(h), gg(g)) << h << " vs " << g;
  }
  EXPECT_EQ(hf("model.embed_tokens.weight"), "embed");
  EXPECT_EQ(gg("blk.12.attn_q.weight"), "layers.12.q_proj");
  EXPECT_EQ(gg("blk.3.ffn_norm.weight"), "layers.3.mlp_norm");
  EXPECT_EQ(hf("model.layers.3.self_attn.v_proj.bias"), "layers.3.v_bias");
  EXPECT_EQ(gg("output.weight"), "lm_head");
  EXPECT_EQ(gg("output_norm.weight"), "final_norm");
}

TEST(WeightNames, UnknownAndMalformedNamesAreSkipped) {
  for (const char* n : {"rope_freqs.weight", "blk.0.rope_freqs.weight", "blk.x.attn_q.weight",
                        "blk..attn_q.weight", "blk.01.attn_q.weight", "blk.-1.attn_q.weight",
                        "blk.1", "token_embd.weight.extra", "model.embed_tokens.weight"}) {
    EXPECT_EQ(gg(n), "<none>") << n;
  }
  for (const char* n : {"model.layers.0.self_attn.rotary_emb.inv_freq", "token_embd.weight",
                        "model.layers.0.attn_q.weight", "model.layers.1e3.mlp.up_proj.weight"}) {
    EXPECT_EQ(hf(n), "<none>") << n;
  }
}

}  // namespace
}  // namespace kiln
