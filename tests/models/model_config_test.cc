// ModelConfig normalization from HF config.json and GGUF metadata, per family.
#include "models/model_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numbers>
#include <tuple>

#include <sys/stat.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "models/gguf.h"
#include "models/model_source.h"
#include "nlohmann/json.hpp"
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
              HasSubstr("config.json: must be a JSON object, got an array"));
  EXPECT_THAT(
      model_config_from_hf_json(R"({"architectures": ["LlamaForCausalLM"]})").status().message(),
      HasSubstr("config.json: \"hidden_size\" is missing; it must be an integer"));
  EXPECT_THAT(
      model_config_from_hf_json(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": "big"})")
          .status()
          .message(),
      HasSubstr("\"hidden_size\" must be an integer, got a string \"big\""));
  EXPECT_THAT(
      model_config_from_hf_json(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
    "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 3, "intermediate_size": 8,
    "vocab_size": 10})")
          .status()
          .message(),
      HasSubstr("must be a multiple of KV heads"));
}

// A valid small config with `extra` fields merged over it (later keys win in nlohmann's parse,
// so the override goes through a json object instead).
std::string config_with(const std::string& key, const std::string& value_json) {
  nlohmann::json j = nlohmann::json::parse(R"({"architectures": ["LlamaForCausalLM"],
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 96, "vocab_size": 128, "max_position_embeddings": 256,
    "bos_token_id": 1, "eos_token_id": 2})");
  // The value goes in as raw text: some (1e999) are not values nlohmann would build.
  j[key] = "@VALUE@";
  std::string text = j.dump();
  text.replace(text.find("\"@VALUE@\""), 9, value_json);
  return text;
}

absl::StatusOr<ModelConfig> parse_with(const std::string& key, const std::string& value_json) {
  return model_config_from_hf_json(config_with(key, value_json), "/m/config.json");
}

// Every field kiln reads, given every wrong JSON type: an error naming the file and the field,
// never an exception (main aborted on bools and strings of the wrong type).
TEST(ModelConfigHf, WrongTypesAreErrorsNamingTheFieldAndFile) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> fields = {
      {"hidden_size", {"\"64\"", "64.5", "true", "[64]", "{}", "null"}},
      {"num_hidden_layers", {"\"2\"", "2.0", "false", "[]"}},
      {"num_attention_heads", {"\"4\"", "null", "{}"}},
      {"num_key_value_heads", {"\"2\"", "[2]"}},
      {"intermediate_size", {"\"96\"", "null"}},
      {"vocab_size", {"\"128\"", "1e3"}},
      {"max_position_embeddings", {"\"256\"", "true"}},
      {"head_dim", {"\"16\"", "16.5"}},
      {"rms_norm_eps", {"\"1e-5\"", "true", "[1e-5]"}},
      {"rope_theta", {"\"10000\"", "{}"}},
      {"tie_word_embeddings", {"\"yes\"", "1", "[]"}},
      {"attention_bias", {"\"false\"", "0"}},
      {"mlp_bias", {"\"false\"", "0"}},
      {"use_sliding_window", {"\"true\"", "1"}},
      {"sliding_window", {"\"4096\"", "4096.5", "true"}},
      {"rope_scaling", {"\"llama3\"", "[1]", "7"}},
      {"bos_token_id", {"\"1\"", "[\"1\"]", "1.5", "-1", "4294967296"}},
      {"eos_token_id", {"\"2\"", "{}", "[2, null]"}},
      {"torch_dtype", {"16", "true", "\"float8\""}},
      {"hidden_act", {"7", "\"gelu\""}},
      {"architectures", {"\"LlamaForCausalLM\"", "[]", "[7]", "null"}},
  };
  for (const auto& [key, values] : fields) {
    for (const std::string& v : values) {
      absl::StatusOr<ModelConfig> c = parse_with(key, v);
      ASSERT_FALSE(c.ok()) << key << " = " << v;
      EXPECT_THAT(c.status().message(), HasSubstr("/m/config.json: ")) << key << " = " << v;
      EXPECT_THAT(c.status().message(), HasSubstr("\"" + key + "\"")) << key << " = " << v;
    }
  }
  // The same in rope_scaling's own fields: the nested name is given in full.
  EXPECT_THAT(
      parse_with("rope_scaling", R"({"rope_type": "llama3", "factor": "8"})").status().message(),
      HasSubstr("\"rope_scaling.factor\" must be a number, got a string"));
  EXPECT_THAT(parse_with("rope_scaling", R"({"rope_type": 3})").status().message(),
              HasSubstr("\"rope_scaling.rope_type\" must be a string"));
}

TEST(ModelConfigHf, NullMeansUnsetForOptionalFields) {
  for (const char* key : {"rope_scaling", "sliding_window", "tie_word_embeddings", "head_dim",
                          "rope_theta", "max_position_embeddings", "bos_token_id"}) {
    absl::StatusOr<ModelConfig> c = parse_with(key, "null");
    EXPECT_TRUE(c.ok()) << key << ": " << c.status();
  }
}

TEST(ModelConfigHf, SyntaxErrorsSayWhere) {
  absl::StatusOr<ModelConfig> c =
      model_config_from_hf_json("{\n  \"hidden_size\": 64,\n  \"vocab\": ]\n}", "/m/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(),
              HasSubstr("/m/config.json: not valid JSON at line 3, column 12 (byte 34)"));
  std::string deep(100000, '[');
  EXPECT_THAT(model_config_from_hf_json(deep).status().message(), HasSubstr("not valid JSON"));
  std::string nested = "{\"hidden_size\": " + std::string(1000, '[') + std::string(1000, ']') + "}";
  EXPECT_THAT(model_config_from_hf_json(nested).status().message(),
              HasSubstr("nested more than 64 levels"));
}

TEST(ModelConfigHf, HyperParametersMustBeFiniteAndInRange) {
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"rope_theta", "1e999", "not valid JSON: number overflow parsing '1e999'"},
      {"rope_theta", "-5", "rope theta -5 must be"},
      {"rope_theta", "0", "rope theta 0 must be"},
      {"rms_norm_eps", "2", "rms_norm_eps 2 must be a finite number in (0, 1)"},
      {"rms_norm_eps", "0", "rms_norm_eps 0 must be"},
      {"rms_norm_eps", "-1e-5", "rms_norm_eps -1e-05 must be"},
      {"hidden_size", "0", "hidden size 0 must be positive"},
      {"num_hidden_layers", "-3", "layer count -3 must be positive"},
      {"num_hidden_layers", "4294967296", "layer count 4294967296 is implausibly large"},
      {"vocab_size", "9223372036854775807", "vocabulary size 9223372036854775807 is implausibly"},
      {"hidden_size", "18446744073709551615", "\"hidden_size\" = 18446744073709551615 is out of"},
      {"head_dim", "15", "head_dim 15 must be even"},
      {"num_key_value_heads", "3", "must be a multiple of KV heads (3)"},
      {"eos_token_id", "[2, 128]", "eos token id 128 is outside the vocabulary (128)"},
      {"bos_token_id", "500", "bos token id 500 is outside the vocabulary"},
  };
  for (const auto& [key, value, want] : cases) {
    absl::StatusOr<ModelConfig> c = parse_with(key, value);
    ASSERT_FALSE(c.ok()) << key << " = " << value;
    EXPECT_THAT(c.status().message(), HasSubstr(want)) << key << " = " << value;
    EXPECT_THAT(c.status().message(), HasSubstr("/m/config.json")) << key << " = " << value;
  }
  EXPECT_THAT(
      parse_with("rope_scaling", R"({"rope_type": "llama3", "factor": 0.5})").status().message(),
      HasSubstr("rope_scaling factor 0.5 must be a finite number >= 1"));
  EXPECT_THAT(parse_with("rope_scaling", R"({"rope_type": "llama3", "factor": 8,
      "low_freq_factor": 4, "high_freq_factor": 1})")
                  .status()
                  .message(),
              HasSubstr("must be finite with 0 < low < high"));
}

// A head count that does not divide the hidden size, with no head_dim: said as such (main said
// nothing for HF and "partial rotary embeddings" for GGUF).
TEST(ModelConfigHf, HeadsNotDividingHiddenAreNamed) {
  absl::StatusOr<ModelConfig> c = parse_with("num_attention_heads", "6");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(),
              HasSubstr("num_attention_heads (6) does not divide hidden_size (64), and there is "
                        "no head_dim"));
}

// Config variants of the family (issue 18.4): each loads or is refused by name.
TEST(ModelConfigVariants, HeadDimOtherThanHiddenOverHeadsLoads) {
  std::string text = config_with("head_dim", "32");  // 4 heads x 32 = 128, hidden 64
  absl::StatusOr<ModelConfig> c = model_config_from_hf_json(text);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_EQ(c->hidden_size, 64);
}

TEST(ModelConfigVariants, RopeScalingTypesOtherThanLlama3AreRefusedByName) {
  for (const char* type : {"linear", "dynamic", "yarn", "longrope"}) {
    for (const char* field : {"rope_type", "type"}) {  // current and legacy spelling
      absl::StatusOr<ModelConfig> c = parse_with(
          "rope_scaling", absl::StrCat(R"({")", field, R"(": ")", type, R"(", "factor": 4.0})"));
      ASSERT_FALSE(c.ok()) << type;
      EXPECT_THAT(c.status().message(),
                  HasSubstr(absl::StrCat("unsupported rope_scaling type \"", type, "\"")));
      EXPECT_THAT(c.status().message(), HasSubstr("kiln implements \"llama3\""));
    }
  }
  EXPECT_TRUE(parse_with("rope_scaling", R"({"rope_type": "default"})").ok());
  absl::StatusOr<ModelConfig> llama3 =
      parse_with("rope_scaling", R"({"rope_type": "llama3", "factor": 8.0})");
  ASSERT_TRUE(llama3.ok()) << llama3.status();
  ASSERT_TRUE(llama3->rope_scaling.has_value());
  EXPECT_EQ(llama3->rope_scaling->factor, 8.0);
}

TEST(ModelConfigVariants, BiasesBeyondQwen2sAreRefusedByName) {
  EXPECT_THAT(parse_with("attention_bias", "true").status().message(),
              HasSubstr("\"attention_bias\" = true (biases on the q/k/v and o projections) is "
                        "not supported"));
  EXPECT_THAT(parse_with("mlp_bias", "true").status().message(),
              HasSubstr("\"mlp_bias\" = true (biased MLP projections) is not supported"));
  absl::StatusOr<ModelConfig> off = parse_with("mlp_bias", "false");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->attention_bias);
  EXPECT_THAT(parse_with("hidden_act", "\"gelu\"").status().message(),
              HasSubstr("\"hidden_act\" = \"gelu\" is not supported"));
}

TEST(ModelConfigVariants, SlidingWindowCapsAndSaysSo) {
  std::string text = config_with("sliding_window", "128");  // max_position_embeddings 256
  absl::StatusOr<ModelConfig> c = model_config_from_hf_json(text);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->max_context, 128);
  EXPECT_EQ(c->sliding_window, 128);
  EXPECT_EQ(c->trained_context, 256);
  EXPECT_THAT(c->summary(), HasSubstr("ctx capped at the sliding window of 128 (trained for 256)"));
  // A window at least the context (Mistral v0.2+ writes null) changes nothing.
  for (const char* v : {"256", "null", "4096"}) {
    absl::StatusOr<ModelConfig> full = parse_with("sliding_window", v);
    ASSERT_TRUE(full.ok()) << full.status();
    EXPECT_EQ(full->max_context, 256) << v;
    EXPECT_EQ(full->sliding_window, 0) << v;
  }
  EXPECT_THAT(parse_with("sliding_window", "-1").status().message(),
              HasSubstr("\"sliding_window\" = -1 is negative"));
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

// An HF model folder in a temp dir: `config` as config.json beside the tiny fixture's weights.
class HfDir : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(dir_);
    std::filesystem::create_symlink(testing::fixture("tiny", "model.safetensors"),
                                    dir_ + "/model.safetensors");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write_config(const std::string& text) { std::ofstream(dir_ + "/config.json") << text; }
  std::string tiny_config() {
    std::ifstream in(testing::fixture("tiny", "config.json"));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::string dir_ = testing::unique_temp_path("hf_dir");
};

// A declared layer count far above the tensors present is refused before anything is sized by
// it (main built a 2^31-layer graph).
TEST_F(HfDir, LayerCountMustMatchTheCheckpoint) {
  nlohmann::json j = nlohmann::json::parse(tiny_config());
  const int64_t real = j["num_hidden_layers"];
  j["num_hidden_layers"] = int64_t{1} << 31;  // above any real model: refused outright
  write_config(j.dump());
  EXPECT_THAT(load_model_config(dir_).status().message(),
              HasSubstr("layer count 2147483648 is implausibly large"));
  for (int64_t declared : {int64_t{60000}, real + 1, real - 1}) {
    j["num_hidden_layers"] = declared;
    write_config(j.dump());
    absl::StatusOr<ModelConfig> c = load_model_config(dir_);
    ASSERT_FALSE(c.ok()) << declared;
    EXPECT_THAT(c.status().message(),
                HasSubstr(absl::StrCat("config.json: num_hidden_layers is ", declared,
                                       " but the checkpoint holds tensors for ", real, " layers")));
  }
  j["num_hidden_layers"] = real;
  write_config(j.dump());
  EXPECT_TRUE(load_model_config(dir_).ok());
}

// config.json that is not a regular file (main read /dev/zero forever and blocked on a FIFO), or
// far larger than any config, is refused before it is read.
TEST_F(HfDir, ConfigMustBeASmallRegularFile) {
  std::filesystem::create_symlink("/dev/zero", dir_ + "/config.json");
  EXPECT_THAT(load_model_config(dir_).status().message(), HasSubstr("not a regular file"));
  std::filesystem::remove(dir_ + "/config.json");
  ASSERT_EQ(mkfifo((dir_ + "/config.json").c_str(), 0600), 0);
  EXPECT_THAT(load_model_config(dir_).status().message(), HasSubstr("not a regular file"));
  std::filesystem::remove(dir_ + "/config.json");
  write_config(std::string(17 << 20, ' '));
  EXPECT_THAT(load_model_config(dir_).status().message(),
              HasSubstr("bytes is more than the 16777216 bytes such a file may have"));
  std::filesystem::remove(dir_ + "/model.safetensors");
  write_config(tiny_config());
  EXPECT_THAT(load_model_config(dir_).status().message(),
              HasSubstr("no model.safetensors or model.safetensors.index.json"));
}

// A minimal llama GGUF: the metadata model_config_from_gguf reads, plus one f32 [64] norm tensor
// per layer in `layers`.
struct GgufModel {
  uint64_t block_count = 1;
  int layers = 1;
  uint32_t heads = 4;
  float rope_base = 10000.0f;
  float eps = 1e-5f;

  std::string bytes() const {
    std::string s;
    auto raw = [&](const void* p, size_t n) { s.append(static_cast<const char*>(p), n); };
    auto u32 = [&](uint32_t v) { raw(&v, 4); };
    auto u64 = [&](uint64_t v) { raw(&v, 8); };
    auto str = [&](const std::string& v) {
      u64(v.size());
      s += v;
    };
    s += "GGUF";
    u32(3);
    u64(static_cast<uint64_t>(layers));  // tensors
    u64(8);                              // metadata entries
    str("general.architecture");
    u32(8);
    str("llama");
    for (auto [key, v] : {std::pair<const char*, uint32_t>{"llama.embedding_length", 64},
                          {"llama.attention.head_count", heads},
                          {"llama.feed_forward_length", 96},
                          {"llama.vocab_size", 128}}) {
      str(key);
      u32(4);
      u32(v);
    }
    str("llama.block_count");
    u32(10);
    u64(block_count);
    for (auto [key, v] : {std::pair<const char*, float>{"llama.rope.freq_base", rope_base},
                          {"llama.attention.layer_norm_rms_epsilon", eps}}) {
      str(key);
      u32(6);
      raw(&v, 4);
    }
    for (int l = 0; l < layers; ++l) {
      str(absl::StrCat("blk.", l, ".attn_norm.weight"));
      u32(1);
      u64(64);
      u32(0);        // F32
      u64(l * 256);  // offset
    }
    s.resize((s.size() + 31) / 32 * 32, '\0');
    s.append(static_cast<size_t>(layers) * 256, '\0');
    return s;
  }
};

class GgufConfig : public ::testing::Test {
 protected:
  absl::StatusOr<ModelConfig> load(const GgufModel& m) {
    std::ofstream(path_, std::ios::binary) << m.bytes();
    absl::StatusOr<std::unique_ptr<GgufFile>> g = GgufFile::open(path_);
    if (!g.ok()) return g.status();
    return model_config_from_gguf(**g);
  }
  void TearDown() override { std::filesystem::remove(path_); }
  std::string path_ = testing::unique_temp_path("config.gguf");
};

TEST_F(GgufConfig, ValidFileLoads) {
  GgufModel m;
  m.block_count = 2;
  m.layers = 2;
  absl::StatusOr<ModelConfig> c = load(m);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_layers, 2);
  EXPECT_EQ(c->head_dim, 16);
}

TEST_F(GgufConfig, BlockCountMustMatchTheTensors) {
  for (uint64_t declared : {uint64_t{1} << 31, uint64_t{1} << 32, uint64_t{3}}) {
    GgufModel m;
    m.block_count = declared;
    m.layers = 2;
    absl::StatusOr<ModelConfig> c = load(m);
    ASSERT_FALSE(c.ok()) << declared;
    EXPECT_THAT(c.status().message(),
                HasSubstr(absl::StrCat("llama.block_count is ", declared,
                                       " but the checkpoint holds tensors for 2 layers")));
  }
}

TEST_F(GgufConfig, NonFiniteHyperParametersAreRefused) {
  GgufModel m;
  m.rope_base = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(load(m).status().message(), HasSubstr("rope theta nan must be a finite number"));
  m = GgufModel();
  m.eps = std::numeric_limits<float>::infinity();
  EXPECT_THAT(load(m).status().message(), HasSubstr("rms_norm_eps inf must be a finite number"));
}

TEST_F(GgufConfig, HeadsNotDividingHiddenAreNamed) {
  GgufModel m;
  m.heads = 6;
  EXPECT_THAT(load(m).status().message(),
              HasSubstr("llama.attention.head_count (6) does not divide llama.embedding_length "
                        "(64)"));
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
