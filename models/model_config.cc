// HF and GGUF config normalization.
#include "models/model_config.h"

#include <cmath>
#include <cstring>
#include <numbers>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "models/dequantize.h"

namespace kiln {
namespace {

using nlohmann::json;

struct ArchInfo {
  const char* hf_name;
  const char* family;
};
constexpr ArchInfo kArchitectures[] = {
    {"LlamaForCausalLM", "llama"},
    {"MistralForCausalLM", "llama"},
    {"Qwen2ForCausalLM", "qwen2"},
};
constexpr const char* kGgufArchitectures[] = {"llama", "qwen2"};

absl::Status invalid(auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); }

// Reads an integer key; `fallback` when absent (nullopt = required).
absl::StatusOr<int64_t> json_int(const json& j, const char* key, std::optional<int64_t> fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    return invalid("config.json: missing \"", key, "\"");
  }
  if (!it->is_number_integer()) return invalid("config.json: \"", key, "\" must be an integer");
  return it->get<int64_t>();
}

absl::StatusOr<double> json_float(const json& j, const char* key, std::optional<double> fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    return invalid("config.json: missing \"", key, "\"");
  }
  if (!it->is_number()) return invalid("config.json: \"", key, "\" must be a number");
  return it->get<double>();
}

// bos/eos ids may be an int or a list of ints.
absl::StatusOr<std::vector<int32_t>> json_ids(const json& j, const char* key) {
  std::vector<int32_t> out;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return out;
  if (it->is_number_integer()) {
    out.push_back(it->get<int32_t>());
  } else if (it->is_array()) {
    for (const json& v : *it) {
      if (!v.is_number_integer()) return invalid("config.json: \"", key, "\" must hold integers");
      out.push_back(v.get<int32_t>());
    }
  } else {
    return invalid("config.json: \"", key, "\" must be an integer or a list of integers");
  }
  return out;
}

std::string supported_list() { return absl::StrJoin(supported_architectures(), ", "); }

// llama.cpp stores llama3 rope scaling as per-frequency divisors (rope_freqs.weight). The rope only
// depends on the factor and on the line s(1/wavelen) = a/wavelen + b through the smoothed band, so
// any (original_max_positions, low, high) on that line reproduces it exactly; recover one.
absl::StatusOr<std::optional<RopeScaling>> llama3_from_freq_factors(
    const std::vector<float>& factors, double theta, int64_t head_dim) {
  double big = 1.0;
  for (float f : factors) big = std::max(big, static_cast<double>(f));
  if (big <= 1.0 + 1e-6) return std::optional<RopeScaling>();  // all ones: no scaling
  // s_i from f_i: 1/f = (1 - s)/F + s  =>  s = (1/f - 1/F) / (1 - 1/F)
  std::vector<std::pair<double, double>> band;  // (1/wavelen, s)
  const int64_t n = static_cast<int64_t>(factors.size());
  for (int64_t i = 0; i < n; ++i) {
    double f = factors[i];
    if (f <= 1.0 + 1e-6 || f >= big - 1e-6) continue;
    double inv_freq =
        std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    double inv_wavelen = inv_freq / (2 * std::numbers::pi);
    band.emplace_back(inv_wavelen, (1.0 / f - 1.0 / big) / (1.0 - 1.0 / big));
  }
  RopeScaling s;
  s.factor = big;
  if (band.size() < 2) {
    return invalid(
        "rope_freqs.weight: cannot recover llama3 scaling from fewer than 2 smoothed "
        "frequencies");
  }
  double a = (band.back().second - band.front().second) / (band.back().first - band.front().first);
  double b = band.front().second - a * band.front().first;
  // s = orig/(high-low) * (1/wavelen) - low/(high-low). Choose orig = 8192.
  s.original_max_positions = 8192;
  double span = 8192.0 / a;  // high - low
  s.low_freq_factor = -b * span;
  s.high_freq_factor = s.low_freq_factor + span;
  return std::optional<RopeScaling>(s);
}

}  // namespace

const std::vector<std::string>& supported_architectures() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const ArchInfo& a : kArchitectures) out.push_back(a.hf_name);
    for (const char* a : kGgufArchitectures) out.push_back(absl::StrCat(a, " (GGUF)"));
    return out;
  }();
  return names;
}

absl::Status ModelConfig::validate() const {
  if (hidden_size <= 0 || num_layers <= 0 || num_heads <= 0 || num_kv_heads <= 0 || head_dim <= 0 ||
      intermediate_size <= 0 || vocab_size <= 0) {
    return invalid("model config has a non-positive size: ", summary());
  }
  if (num_heads % num_kv_heads != 0) {
    return invalid("attention heads (", num_heads, ") must be a multiple of KV heads (",
                   num_kv_heads, ")");
  }
  if (head_dim % 2 != 0) return invalid("head_dim ", head_dim, " must be even for RoPE");
  if (max_context <= 0) return invalid("model config has no context length");
  if (rms_eps <= 0 || rope_theta <= 0) return invalid("rms eps and rope theta must be positive");
  return absl::OkStatus();
}

std::string ModelConfig::summary() const {
  std::string s = absl::StrFormat(
      "%s: %d layers, hidden %d, heads %d/%d x %d, ffn %d, vocab %d, ctx %d, rope theta %g%s%s%s",
      architecture, num_layers, hidden_size, num_heads, num_kv_heads, head_dim, intermediate_size,
      vocab_size, max_context, rope_theta, rope_scaling ? " (llama3 scaling)" : "",
      rope_interleaved ? " interleaved" : "", tie_embeddings ? ", tied embeddings" : "");
  if (attention_bias) s += ", qkv bias";
  return s;
}

absl::StatusOr<ModelConfig> model_config_from_hf_json(const std::string& json_text) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return invalid("config.json: not a JSON object");
  ModelConfig c;
  std::string arch;
  if (auto it = j.find("architectures");
      it != j.end() && it->is_array() && !it->empty() && (*it)[0].is_string()) {
    arch = (*it)[0].get<std::string>();
  } else {
    return invalid("config.json: missing \"architectures\" (supported: ", supported_list(), ")");
  }
  for (const ArchInfo& a : kArchitectures) {
    if (arch == a.hf_name) c.architecture = a.family;
  }
  if (c.architecture.empty()) {
    return invalid("unsupported architecture ", arch, " (supported: ", supported_list(), ")");
  }
  c.source_architecture = arch;
  auto get_int = [&](const char* key, std::optional<int64_t> fallback,
                     int64_t* out) -> absl::Status {
    absl::StatusOr<int64_t> v = json_int(j, key, fallback);
    if (!v.ok()) return v.status();
    *out = *v;
    return absl::OkStatus();
  };
  for (absl::Status s : {get_int("hidden_size", std::nullopt, &c.hidden_size),
                         get_int("num_hidden_layers", std::nullopt, &c.num_layers),
                         get_int("num_attention_heads", std::nullopt, &c.num_heads),
                         get_int("intermediate_size", std::nullopt, &c.intermediate_size),
                         get_int("vocab_size", std::nullopt, &c.vocab_size),
                         get_int("max_position_embeddings", 2048, &c.max_context)}) {
    if (!s.ok()) return s;
  }
  if (absl::Status s = get_int("num_key_value_heads", c.num_heads, &c.num_kv_heads); !s.ok())
    return s;
  if (c.num_heads <= 0) return invalid("config.json: num_attention_heads must be positive");
  if (absl::Status s = get_int("head_dim", c.hidden_size / c.num_heads, &c.head_dim); !s.ok())
    return s;
  absl::StatusOr<double> eps = json_float(j, "rms_norm_eps", 1e-6);
  absl::StatusOr<double> theta = json_float(j, "rope_theta", 10000.0);
  if (!eps.ok()) return eps.status();
  if (!theta.ok()) return theta.status();
  c.rms_eps = *eps;
  c.rope_theta = *theta;
  c.tie_embeddings = j.value("tie_word_embeddings", false);
  c.attention_bias = c.architecture == "qwen2" || j.value("attention_bias", false);
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return invalid("config.json: \"rope_scaling\" must be an object");
    std::string type = it->value("rope_type", it->value("type", std::string()));
    if (type == "llama3") {
      RopeScaling s;
      absl::StatusOr<double> factor = json_float(*it, "factor", std::nullopt);
      absl::StatusOr<double> low = json_float(*it, "low_freq_factor", 1.0);
      absl::StatusOr<double> high = json_float(*it, "high_freq_factor", 4.0);
      absl::StatusOr<int64_t> orig = json_int(*it, "original_max_position_embeddings", 8192);
      for (const absl::Status& st : {factor.status(), low.status(), high.status(), orig.status()}) {
        if (!st.ok()) return invalid("rope_scaling: ", st.message());
      }
      s.factor = *factor;
      s.low_freq_factor = *low;
      s.high_freq_factor = *high;
      s.original_max_positions = *orig;
      if (s.high_freq_factor <= s.low_freq_factor) {
        return invalid("rope_scaling: high_freq_factor must exceed low_freq_factor");
      }
      c.rope_scaling = s;
    } else if (type != "default" && !type.empty()) {
      return invalid("unsupported rope_scaling type \"", type, "\" (supported: llama3)");
    }
  }
  // Mistral's sliding window only changes attention beyond the window: cap the context there so
  // every position kiln serves is computed exactly.
  if (auto it = j.find("sliding_window");
      it != j.end() && it->is_number_integer() && it->get<int64_t>() > 0 &&
      it->get<int64_t>() < c.max_context && j.value("use_sliding_window", true)) {
    c.max_context = it->get<int64_t>();
  }
  absl::StatusOr<std::vector<int32_t>> bos = json_ids(j, "bos_token_id");
  absl::StatusOr<std::vector<int32_t>> eos = json_ids(j, "eos_token_id");
  if (!bos.ok()) return bos.status();
  if (!eos.ok()) return eos.status();
  if (!bos->empty()) c.bos_id = (*bos)[0];
  c.eos_ids = *eos;
  std::string torch_dtype = j.value("torch_dtype", std::string("bfloat16"));
  c.weights_dtype = torch_dtype == "float32"   ? DType::kF32
                    : torch_dtype == "float16" ? DType::kF16
                                               : DType::kBF16;
  if (absl::Status s = c.validate(); !s.ok()) return s;
  return c;
}

absl::StatusOr<ModelConfig> model_config_from_gguf(const GgufFile& gguf) {
  absl::StatusOr<std::string> arch = gguf.get_string("general.architecture");
  if (!arch.ok()) return invalid(gguf.path(), ": ", arch.status().message());
  ModelConfig c;
  for (const char* a : kGgufArchitectures) {
    if (*arch == a) c.architecture = a;
  }
  if (c.architecture.empty()) {
    return invalid(gguf.path(), ": unsupported architecture ", *arch,
                   " (supported: ", supported_list(), ")");
  }
  c.source_architecture = *arch;
  const std::string& p = *arch;
  auto get_int = [&](const std::string& key, std::optional<int64_t> fallback,
                     int64_t* out) -> absl::Status {
    if (!gguf.has(key) && fallback) {
      *out = *fallback;
      return absl::OkStatus();
    }
    absl::StatusOr<int64_t> v = gguf.get_int(key);
    if (!v.ok()) return invalid(gguf.path(), ": ", v.status().message());
    *out = *v;
    return absl::OkStatus();
  };
  for (absl::Status s : {get_int(p + ".embedding_length", std::nullopt, &c.hidden_size),
                         get_int(p + ".block_count", std::nullopt, &c.num_layers),
                         get_int(p + ".attention.head_count", std::nullopt, &c.num_heads),
                         get_int(p + ".feed_forward_length", std::nullopt, &c.intermediate_size),
                         get_int(p + ".context_length", 2048, &c.max_context)}) {
    if (!s.ok()) return s;
  }
  if (absl::Status s = get_int(p + ".attention.head_count_kv", c.num_heads, &c.num_kv_heads);
      !s.ok())
    return s;
  if (c.num_heads <= 0) return invalid(gguf.path(), ": attention.head_count must be positive");
  if (absl::Status s =
          get_int(p + ".attention.key_length", c.hidden_size / c.num_heads, &c.head_dim);
      !s.ok()) {
    return s;
  }
  // vocab_size is optional in GGUF; the token list is authoritative.
  if (gguf.has(p + ".vocab_size")) {
    if (absl::Status s = get_int(p + ".vocab_size", std::nullopt, &c.vocab_size); !s.ok()) return s;
  } else if (absl::StatusOr<std::vector<std::string>> tokens =
                 gguf.get_string_array("tokenizer.ggml.tokens");
             tokens.ok()) {
    c.vocab_size = static_cast<int64_t>(tokens->size());
  }
  absl::StatusOr<double> eps = gguf.get_float(p + ".attention.layer_norm_rms_epsilon");
  if (!eps.ok()) return invalid(gguf.path(), ": ", eps.status().message());
  c.rms_eps = *eps;
  if (gguf.has(p + ".rope.freq_base")) {
    absl::StatusOr<double> theta = gguf.get_float(p + ".rope.freq_base");
    if (!theta.ok()) return invalid(gguf.path(), ": ", theta.status().message());
    c.rope_theta = *theta;
  }
  if (gguf.has(p + ".rope.dimension_count")) {
    absl::StatusOr<int64_t> rot = gguf.get_int(p + ".rope.dimension_count");
    if (!rot.ok() || *rot != c.head_dim) {
      return invalid(gguf.path(),
                     ": partial rotary embeddings (rope.dimension_count != head_dim) are "
                     "not supported");
    }
  }
  c.tie_embeddings = gguf.find_tensor("output.weight") == nullptr;
  c.attention_bias = gguf.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.rope_interleaved = c.architecture == "llama";
  if (const GgufTensorInfo* freqs = gguf.find_tensor("rope_freqs.weight")) {
    if (freqs->dtype != DType::kF32 || freqs->shape.size() != 1 ||
        freqs->shape[0] != c.head_dim / 2) {
      return invalid(gguf.path(), ": rope_freqs.weight must be f32[", c.head_dim / 2, "]");
    }
    absl::Span<const uint8_t> bytes = gguf.tensor_bytes(*freqs);
    std::vector<float> factors(freqs->shape[0]);
    std::memcpy(factors.data(), bytes.data(), factors.size() * sizeof(float));
    absl::StatusOr<std::optional<RopeScaling>> s =
        llama3_from_freq_factors(factors, c.rope_theta, c.head_dim);
    if (!s.ok()) return invalid(gguf.path(), ": ", s.status().message());
    c.rope_scaling = *s;
  }
  for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"}) {
    if (!gguf.has(key)) continue;
    absl::StatusOr<int64_t> id = gguf.get_int(key);
    if (!id.ok()) return invalid(gguf.path(), ": ", id.status().message());
    if (std::string_view(key) == "tokenizer.ggml.bos_token_id") {
      c.bos_id = static_cast<int32_t>(*id);
    } else {
      c.eos_ids.push_back(static_cast<int32_t>(*id));
    }
  }
  c.weights_dtype = DType::kF32;  // GGUF tensors are dequantized/widened to the compute dtype
  if (absl::Status s = c.validate(); !s.ok()) return invalid(gguf.path(), ": ", s.message());
  return c;
}

}  // namespace kiln
