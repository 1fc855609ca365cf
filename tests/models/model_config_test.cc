// ModelConfig normalization from HF config.json and GGUF metadata, per family.
#include "models/model_config.h"

#include <cmath>
#include <numbers>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "models/gguf.h"
#include "models/model_source.h"
#include "tests/fixtures.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;

TEST(ModelConfigHf, Llama) {
  auto c = model_config_from_hf_json(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
    "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "llama");
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->max_context, 131072);
  ASSERT_TRUE(c->rope_scaling.has_value());
  EXPECT_EQ(c->rope_scaling->factor, 8.0);
  EXPECT_EQ(c->rope_scaling->original_max_positions, 8192);
  EXPECT_EQ(c->eos_ids, (std::vector<int32_t>{128001, 128008, 128009}));
  EXPECT_EQ(c->bos_id, 128000);
  EXPECT_FALSE(c->tie_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_FALSE(c->rope_interleaved);
  EXPECT_EQ(c->weights_dtype, DType::kBF16);
}

TEST(ModelConfigHf, MistralSlidingWindowCapsTheContext) {
  auto c =
      model_config_from_hf_json(R"({"architectures": ["MistralForCausalLM"], "hidden_size": 4096,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
    "vocab_size": 32000, "max_position_embeddings": 32768, "sliding_window": 4096, "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0, "torch_dtype": "float16"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "llama");
  EXPECT_EQ(c->source_architecture, "MistralForCausalLM");
  EXPECT_EQ(c->max_context, 4096);
  EXPECT_EQ(c->weights_dtype, DType::kF16);
}

TEST(ModelConfigHf, Qwen2HasQkvBias) {
  auto c = model_config_from_hf_json(R"({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 896,
    "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864,
    "vocab_size": 151936, "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "tie_word_embeddings": true, "sliding_window": 32768, "use_sliding_window": false})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "qwen2");
  EXPECT_TRUE(c->attention_bias);
  EXPECT_TRUE(c->tie_embeddings);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->max_context, 32768);
  EXPECT_DOUBLE_EQ(c->rms_eps, 1e-6);
}

TEST(ModelConfigHf, UnknownArchitectureNamesTheSupportedOnes) {
  auto c =
      model_config_from_hf_json(R"({"architectures": ["GPTNeoXForCausalLM"], "hidden_size": 8})");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("unsupported architecture GPTNeoXForCausalLM"));
  EXPECT_THAT(c.status().message(),
              HasSubstr("LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"));
}

TEST(ModelConfigHf, BadFieldsAreNamed) {
  EXPECT_THAT(model_config_from_hf_json("[1, 2]").status().message(),
              HasSubstr("not a JSON object"));
  EXPECT_THAT(
      model_config_from_hf_json(R"({"architectures": ["LlamaForCausalLM"]})").status().message(),
      HasSubstr("missing \"hidden_size\""));
  EXPECT_THAT(
      model_config_from_hf_json(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": "big"})")
          .status()
          .message(),
      HasSubstr("\"hidden_size\" must be an integer"));
  EXPECT_THAT(
      model_config_from_hf_json(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
    "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 3, "intermediate_size": 8,
    "vocab_size": 10})")
          .status()
          .message(),
      HasSubstr("must be a multiple of KV heads"));
  EXPECT_THAT(
      model_config_from_hf_json(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
    "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 8, "vocab_size": 10,
    "rope_scaling": {"rope_type": "yarn", "factor": 4}})")
          .status()
          .message(),
      HasSubstr("unsupported rope_scaling type \"yarn\""));
}

// Per-frequency llama3 divisors (HF's _compute_llama3_parameters) for comparing scalings.
std::vector<double> llama3_divisors(const RopeScaling& s, double theta, int64_t head_dim) {
  std::vector<double> out;
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    double f = std::pow(theta, -2.0 * i / head_dim);
    double wavelen = 2 * std::numbers::pi / f;
    double low_wavelen = s.original_max_positions / s.low_freq_factor;
    double high_wavelen = s.original_max_positions / s.high_freq_factor;
    double scaled;
    if (wavelen < high_wavelen) {
      scaled = f;
    } else if (wavelen > low_wavelen) {
      scaled = f / s.factor;
    } else {
      double smooth = (s.original_max_positions / wavelen - s.low_freq_factor) /
                      (s.high_freq_factor - s.low_freq_factor);
      scaled = (1 - smooth) * f / s.factor + smooth * f;
    }
    out.push_back(f / scaled);
  }
  return out;
}

class ModelConfigFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelConfigFixture, GgufAgreesWithHfConfig) {
  const std::string preset = GetParam();
  auto hf = load_model_config(testing::fixture(preset));
  ASSERT_TRUE(hf.ok()) << hf.status();
  auto gg = load_model_config(testing::fixture(preset, "model.f32.gguf"));
  ASSERT_TRUE(gg.ok()) << gg.status();
  EXPECT_EQ(gg->architecture, hf->architecture);
  EXPECT_EQ(gg->hidden_size, hf->hidden_size);
  EXPECT_EQ(gg->num_layers, hf->num_layers);
  EXPECT_EQ(gg->num_heads, hf->num_heads);
  EXPECT_EQ(gg->num_kv_heads, hf->num_kv_heads);
  EXPECT_EQ(gg->head_dim, hf->head_dim);
  EXPECT_EQ(gg->intermediate_size, hf->intermediate_size);
  EXPECT_EQ(gg->vocab_size, hf->vocab_size);
  EXPECT_EQ(gg->max_context, hf->max_context);
  EXPECT_NEAR(gg->rms_eps, hf->rms_eps, 1e-12);
  EXPECT_EQ(gg->rope_theta, hf->rope_theta);
  EXPECT_EQ(gg->tie_embeddings, hf->tie_embeddings);
  EXPECT_EQ(gg->attention_bias, hf->attention_bias);
  EXPECT_EQ(gg->rope_interleaved, hf->architecture == "llama");  // llama.cpp permutes llama q/k
  EXPECT_FALSE(hf->rope_interleaved);
  ASSERT_EQ(gg->rope_scaling.has_value(), hf->rope_scaling.has_value());
  if (hf->rope_scaling) {
    // The recovered scaling reproduces the same per-frequency divisors.
    auto want = llama3_divisors(*hf->rope_scaling, hf->rope_theta, hf->head_dim);
    auto got = llama3_divisors(*gg->rope_scaling, gg->rope_theta, gg->head_dim);
    ASSERT_EQ(want.size(), got.size());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4 * want[i]) << i;
    EXPECT_DOUBLE_EQ(gg->rope_scaling->factor, hf->rope_scaling->factor);
  }
}

INSTANTIATE_TEST_SUITE_P(Presets, ModelConfigFixture,
                         ::testing::Values("tiny", "tiny-gqa", "tiny-qwen2", "tiny-llama3"));

TEST(ModelConfigGguf, SmolLM2) {
  std::string path = testing::smollm2_gguf();
  if (path.empty())
    GTEST_SKIP() << "SmolLM2 GGUF not in the cache (scripts/fetch-model.sh fetches it)";
  auto c = load_model_config(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "llama");
  EXPECT_EQ(c->num_layers, 30);
  EXPECT_EQ(c->hidden_size, 576);
  EXPECT_EQ(c->num_heads, 9);
  EXPECT_EQ(c->num_kv_heads, 3);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->intermediate_size, 1536);
  EXPECT_EQ(c->vocab_size, 49152);
  EXPECT_EQ(c->max_context, 8192);
  EXPECT_EQ(c->rope_theta, 100000.0);
  EXPECT_TRUE(c->tie_embeddings);
  EXPECT_TRUE(c->rope_interleaved);
  EXPECT_EQ(c->bos_id, 1);
  EXPECT_EQ(c->eos_ids, std::vector<int32_t>{2});
}

TEST(ModelSource, ErrorsNameThePath) {
  EXPECT_THAT(load_model_config("/nonexistent/model.gguf").status().message(),
              HasSubstr("/nonexistent/model.gguf: no such file or directory"));
  EXPECT_THAT(load_model_config(KILN_SOURCE_DIR "/CMakeLists.txt").status().message(),
              HasSubstr("not a model: expected a GGUF file or an HF directory"));
  EXPECT_THAT(load_model_config(KILN_SOURCE_DIR "/ir").status().message(),
              HasSubstr("needs config.json"));
}

}  // namespace
}  // namespace kiln
