// HF and GGUF config normalization.
#include "models/model_config.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "ir/checked_arithmetic.h"
#include "models/dequantize.h"
#include "models/json_document.h"
#include "models/weight_names.h"

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

// Size caps far above any real checkpoint (the largest have hidden 16384, 126 layers, 256k
// vocabularies) but low enough that every product of them used for a shape fits in int64 and a
// hostile value cannot make build_llama allocate proportionally to it.
constexpr int64_t kMaxDim = int64_t{1} << 24;
constexpr int64_t kMaxLayers = int64_t{1} << 16;
constexpr int64_t kMaxContext = int64_t{1} << 27;
constexpr int64_t kMaxVocab = std::numeric_limits<int32_t>::max();  // token ids are i32

const char* json_kind(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a bool";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a float";
    case json::value_t::binary: return "binary data";
    case json::value_t::discarded: return "invalid";
  }
  return "?";
}

// Typed reads of one JSON object of config.json: the only way model_config_from_hf_json looks at
// a field, so every wrong type, null or missing key gets the same kind of error naming the file
// and the field, and no nlohmann exception can escape. A null value means "not set" (HF writes
// `"rope_scaling": null`), so it takes the default where there is one.
class ConfigFields {
 public:
  ConfigFields(const json& object, std::string source, std::string prefix = "")
      : j_(object), source_(std::move(source)), prefix_(std::move(prefix)) {}

  absl::Status error(absl::string_view key, absl::string_view what) const {
    return invalid(source_, ": \"", prefix_, key, "\" ", what);
  }

  // The value at `key`, or nullptr when absent or null.
  const json* find(const char* key) const {
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }

  absl::Status missing(const char* key, const char* kind) const {
    auto it = j_.find(key);
    return error(key,
                 absl::StrCat(it == j_.end() ? "is missing" : "is null", "; it must be ", kind));
  }

  absl::Status wrong(const char* key, const json& v, const char* kind) const {
    return error(key, absl::StrCat("must be ", kind, ", got ", json_kind(v), " ", clip(v)));
  }

  absl::StatusOr<int64_t> integer(const char* key, std::optional<int64_t> fallback) const {
    const json* v = find(key);
    if (v == nullptr) {
      if (fallback) return *fallback;
      return missing(key, "an integer");
    }
    if (v->is_number_unsigned() &&
        v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return error(key, absl::StrCat("= ", v->dump(), " is out of range"));
    }
    if (!v->is_number_integer()) return wrong(key, *v, "an integer");
    return v->get<int64_t>();
  }

  absl::StatusOr<double> number(const char* key, std::optional<double> fallback) const {
    const json* v = find(key);
    if (v == nullptr) {
      if (fallback) return *fallback;
      return missing(key, "a number");
    }
    if (!v->is_number()) return wrong(key, *v, "a number");
    return v->get<double>();
  }

  absl::StatusOr<bool> boolean(const char* key, bool fallback) const {
    const json* v = find(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) return wrong(key, *v, "true or false");
    return v->get<bool>();
  }

  absl::StatusOr<std::string> string(const char* key, std::string fallback) const {
    const json* v = find(key);
    if (v == nullptr) return fallback;
    if (!v->is_string()) return wrong(key, *v, "a string");
    return v->get<std::string>();
  }

  // bos/eos ids: an integer or a list of integers, each a valid token id (>= 0, fits i32).
  absl::StatusOr<std::vector<int32_t>> ids(const char* key) const {
    std::vector<int32_t> out;
    const json* v = find(key);
    if (v == nullptr) return out;
    const bool is_list = v->is_array();
    if (!is_list && !v->is_number_integer()) {
      return wrong(key, *v, "an integer or a list of integers");
    }
    for (const json& id : is_list ? *v : json::array({*v})) {
      if (!id.is_number_integer() || id.get<double>() < 0 ||
          id.get<double>() > std::numeric_limits<int32_t>::max()) {
        return error(key, absl::StrCat("holds ", clip(id),
                                       ", which is not a token id "
                                       "(an integer in 0..2^31-1)"));
      }
      out.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
    return out;
  }

  // A nested object (nullptr when absent or null).
  absl::StatusOr<const json*> object(const char* key) const {
    const json* v = find(key);
    if (v != nullptr && !v->is_object()) return wrong(key, *v, "an object");
    return v;
  }

  const std::string& source() const { return source_; }

 private:
  // A value for an error message, cut short: a hostile file may hold megabytes in one field.
  static std::string clip(const json& v) {
    std::string s = v.dump();
    if (s.size() > 40) s = absl::StrCat(s.substr(0, 40), "...");
    return s;
  }

  const json& j_;
  std::string source_;
  std::string prefix_;
};

#define KILN_ASSIGN_OR_RETURN_IMPL(lhs, expr, tmp) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(*tmp)
#define KILN_CONCAT_INNER(a, b) a##b
#define KILN_CONCAT(a, b) KILN_CONCAT_INNER(a, b)
// Assigns the value of a StatusOr expression or returns its error.
#define KILN_ASSIGN_OR_RETURN(lhs, expr) \
  KILN_ASSIGN_OR_RETURN_IMPL(lhs, expr, KILN_CONCAT(_status_or_, __LINE__))

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

absl::Status check_layer_count(int64_t declared, WeightNaming naming,
                               absl::Span<const std::string_view> tensor_names) {
  std::set<int64_t> seen;
  for (std::string_view name : tensor_names) {
    std::optional<std::string> canonical = canonical_weight_name(naming, name);
    if (!canonical) continue;
    absl::string_view rest = *canonical;
    int64_t layer = 0;
    if (!absl::ConsumePrefix(&rest, "layers.") ||
        !absl::SimpleAtoi(rest.substr(0, rest.find('.')), &layer)) {
      continue;
    }
    seen.insert(layer);
  }
  const int64_t held = seen.empty() ? 0 : *seen.rbegin() + 1;
  if (held == declared && static_cast<int64_t>(seen.size()) == held) return absl::OkStatus();
  if (static_cast<int64_t>(seen.size()) != held) {
    return invalid("is ", declared, ", and the checkpoint's layer tensors go up to layer ",
                   held - 1, " but only ", seen.size(), " layers have any");
  }
  return invalid("is ", declared, " but the checkpoint holds tensors for ", held, " layers");
}

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
  const std::pair<const char*, int64_t> sizes[] = {{"hidden size", hidden_size},
                                                   {"layer count", num_layers},
                                                   {"attention head count", num_heads},
                                                   {"KV head count", num_kv_heads},
                                                   {"head_dim", head_dim},
                                                   {"intermediate size", intermediate_size},
                                                   {"vocabulary size", vocab_size},
                                                   {"context length", max_context}};
  for (const auto& [what, v] : sizes) {
    if (v <= 0) return invalid(what, " ", v, " must be positive");
  }
  for (const auto& [what, v, cap] : {std::tuple{"hidden size", hidden_size, kMaxDim},
                                     std::tuple{"layer count", num_layers, kMaxLayers},
                                     std::tuple{"attention head count", num_heads, kMaxDim},
                                     std::tuple{"head_dim", head_dim, kMaxDim},
                                     std::tuple{"intermediate size", intermediate_size, kMaxDim},
                                     std::tuple{"vocabulary size", vocab_size, kMaxVocab},
                                     std::tuple{"context length", max_context, kMaxContext}}) {
    if (v > cap) return invalid(what, " ", v, " is implausibly large (at most ", cap, ")");
  }
  if (num_heads % num_kv_heads != 0) {
    return invalid("attention heads (", num_heads, ") must be a multiple of KV heads (",
                   num_kv_heads, ")");
  }
  if (head_dim % 2 != 0) return invalid("head_dim ", head_dim, " must be even for RoPE");
  // Every weight's element count (q/o: heads x head_dim x hidden) must fit in int64.
  if (!checked_product({num_heads, head_dim, hidden_size}) ||
      !checked_product({vocab_size, hidden_size})) {
    return invalid("weights of ", summary(), " have more than 2^63 elements");
  }
  if (!std::isfinite(rms_eps) || rms_eps <= 0 || rms_eps >= 1) {
    return invalid("rms_norm_eps ", rms_eps, " must be a finite number in (0, 1)");
  }
  if (!std::isfinite(rope_theta) || rope_theta <= 1) {
    return invalid("rope theta ", rope_theta, " must be a finite number above 1");
  }
  if (rope_scaling) {
    const RopeScaling& r = *rope_scaling;
    if (!std::isfinite(r.factor) || r.factor < 1) {
      return invalid("rope_scaling factor ", r.factor, " must be a finite number >= 1");
    }
    if (!std::isfinite(r.low_freq_factor) || !std::isfinite(r.high_freq_factor) ||
        r.low_freq_factor <= 0 || r.high_freq_factor <= r.low_freq_factor) {
      return invalid("rope_scaling low_freq_factor ", r.low_freq_factor, " and high_freq_factor ",
                     r.high_freq_factor, " must be finite with 0 < low < high");
    }
    if (r.original_max_positions <= 0 || r.original_max_positions > kMaxContext) {
      return invalid("rope_scaling original_max_position_embeddings ", r.original_max_positions,
                     " must be in 1..", kMaxContext);
    }
  }
  if (bos_id >= vocab_size) {
    return invalid("bos token id ", bos_id, " is outside the vocabulary (", vocab_size, ")");
  }
  for (int32_t id : eos_ids) {
    if (id < 0 || id >= vocab_size) {
      return invalid("eos token id ", id, " is outside the vocabulary (", vocab_size, ")");
    }
  }
  return absl::OkStatus();
}

std::string ModelConfig::summary() const {
  std::string s = absl::StrFormat(
      "%s: %d layers, hidden %d, heads %d/%d x %d, ffn %d, vocab %d, ctx %d, rope theta %g%s%s%s",
      architecture, num_layers, hidden_size, num_heads, num_kv_heads, head_dim, intermediate_size,
      vocab_size, max_context, rope_theta, rope_scaling ? " (llama3 scaling)" : "",
      rope_interleaved ? " interleaved" : "", tie_embeddings ? ", tied embeddings" : "");
  if (attention_bias) s += ", qkv bias";
  if (sliding_window > 0) {
    absl::StrAppend(&s, ", ctx capped at the sliding window of ", sliding_window, " (trained for ",
                    trained_context, ")");
  }
  return s;
}

namespace {

// rope_scaling: llama3 is implemented; the other HF types would silently change every position's
// rotation, so they are refused by name rather than ignored.
absl::StatusOr<std::optional<RopeScaling>> rope_scaling_from_hf(const ConfigFields& top) {
  KILN_ASSIGN_OR_RETURN(const json* rs, top.object("rope_scaling"));
  if (rs == nullptr) return std::optional<RopeScaling>();
  const ConfigFields f(*rs, top.source(), "rope_scaling.");
  KILN_ASSIGN_OR_RETURN(std::string legacy_type, f.string("type", ""));
  KILN_ASSIGN_OR_RETURN(std::string type, f.string("rope_type", legacy_type));
  if (type.empty() || type == "default") return std::optional<RopeScaling>();
  if (type != "llama3") {
    const bool known = type == "linear" || type == "dynamic" || type == "yarn" ||
                       type == "longrope" || type == "su" || type == "ntk";
    return invalid(top.source(), ": unsupported rope_scaling type \"", type, "\"",
                   known ? " (a known HF scaling kiln does not implement)" : "",
                   "; kiln implements \"llama3\" rope scaling only");
  }
  RopeScaling s;
  KILN_ASSIGN_OR_RETURN(s.factor, f.number("factor", std::nullopt));
  KILN_ASSIGN_OR_RETURN(s.low_freq_factor, f.number("low_freq_factor", 1.0));
  KILN_ASSIGN_OR_RETURN(s.high_freq_factor, f.number("high_freq_factor", 4.0));
  KILN_ASSIGN_OR_RETURN(s.original_max_positions,
                        f.integer("original_max_position_embeddings", 8192));
  return std::optional<RopeScaling>(s);
}

}  // namespace

absl::StatusOr<ModelConfig> model_config_from_hf_json(const std::string& json_text,
                                                      const std::string& source) {
  KILN_ASSIGN_OR_RETURN(const json j, parse_json_document(json_text, source));
  if (!j.is_object()) {
    return invalid(source, ": must be a JSON object, got ", json_kind(j));
  }
  const ConfigFields f(j, source);
  ModelConfig c;
  const json* archs = f.find("architectures");
  if (archs == nullptr || !archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
    return f.error(
        "architectures",
        absl::StrCat("must be a list naming the model class (supported: ", supported_list(), ")"));
  }
  const std::string arch = (*archs)[0].get<std::string>();
  for (const ArchInfo& a : kArchitectures) {
    if (arch == a.hf_name) c.architecture = a.family;
  }
  if (c.architecture.empty()) {
    return invalid(source, ": unsupported architecture ", arch, " (supported: ", supported_list(),
                   ")");
  }
  c.source_architecture = arch;
  KILN_ASSIGN_OR_RETURN(c.hidden_size, f.integer("hidden_size", std::nullopt));
  KILN_ASSIGN_OR_RETURN(c.num_layers, f.integer("num_hidden_layers", std::nullopt));
  KILN_ASSIGN_OR_RETURN(c.num_heads, f.integer("num_attention_heads", std::nullopt));
  KILN_ASSIGN_OR_RETURN(c.intermediate_size, f.integer("intermediate_size", std::nullopt));
  KILN_ASSIGN_OR_RETURN(c.vocab_size, f.integer("vocab_size", std::nullopt));
  KILN_ASSIGN_OR_RETURN(c.max_context, f.integer("max_position_embeddings", 2048));
  KILN_ASSIGN_OR_RETURN(c.num_kv_heads, f.integer("num_key_value_heads", c.num_heads));
  if (c.num_heads <= 0) {
    return f.error("num_attention_heads", absl::StrCat("= ", c.num_heads, " must be positive"));
  }
  if (f.find("head_dim") == nullptr && c.hidden_size % c.num_heads != 0) {
    return invalid(source, ": num_attention_heads (", c.num_heads,
                   ") does not divide hidden_size (", c.hidden_size,
                   "), and there is no head_dim to say the head size");
  }
  KILN_ASSIGN_OR_RETURN(c.head_dim, f.integer("head_dim", c.hidden_size / c.num_heads));
  KILN_ASSIGN_OR_RETURN(c.rms_eps, f.number("rms_norm_eps", 1e-6));
  KILN_ASSIGN_OR_RETURN(c.rope_theta, f.number("rope_theta", 10000.0));
  KILN_ASSIGN_OR_RETURN(c.tie_embeddings, f.boolean("tie_word_embeddings", false));
  KILN_ASSIGN_OR_RETURN(c.rope_scaling, rope_scaling_from_hf(f));

  // Variants of the family that change the math: each either maps onto what build_llama emits or
  // is refused by name, never ignored.
  KILN_ASSIGN_OR_RETURN(const std::string act, f.string("hidden_act", "silu"));
  if (act != "silu") {
    return f.error("hidden_act",
                   absl::StrCat("= \"", act, "\" is not supported (kiln's MLP is SwiGLU: silu)"));
  }
  KILN_ASSIGN_OR_RETURN(const bool attention_bias, f.boolean("attention_bias", false));
  if (attention_bias && c.architecture != "qwen2") {
    // Llama's attention_bias puts biases on q/k/v *and* o_proj; build_llama has no o_proj bias.
    return f.error("attention_bias",
                   "= true (biases on the q/k/v and o projections) is not supported; kiln "
                   "supports q/k/v biases only as Qwen2 has them");
  }
  c.attention_bias = c.architecture == "qwen2";
  KILN_ASSIGN_OR_RETURN(const bool mlp_bias, f.boolean("mlp_bias", false));
  if (mlp_bias) return f.error("mlp_bias", "= true (biased MLP projections) is not supported");

  // Mistral's sliding window only changes attention beyond the window: cap the context there so
  // every position kiln serves is computed exactly (build_llama refuses longer limits by name).
  KILN_ASSIGN_OR_RETURN(const bool use_window, f.boolean("use_sliding_window", true));
  KILN_ASSIGN_OR_RETURN(const int64_t window, f.integer("sliding_window", 0));
  if (window < 0) return f.error("sliding_window", absl::StrCat("= ", window, " is negative"));
  if (use_window && window > 0 && window < c.max_context) {
    c.trained_context = c.max_context;
    c.max_context = window;
    c.sliding_window = window;
  }

  KILN_ASSIGN_OR_RETURN(const std::vector<int32_t> bos, f.ids("bos_token_id"));
  KILN_ASSIGN_OR_RETURN(c.eos_ids, f.ids("eos_token_id"));
  if (!bos.empty()) c.bos_id = bos[0];
  // Newer transformers write "dtype"; older ones "torch_dtype".
  KILN_ASSIGN_OR_RETURN(const std::string dtype_alias, f.string("dtype", "bfloat16"));
  KILN_ASSIGN_OR_RETURN(const std::string torch_dtype, f.string("torch_dtype", dtype_alias));
  if (torch_dtype == "float32") {
    c.weights_dtype = DType::kF32;
  } else if (torch_dtype == "float16") {
    c.weights_dtype = DType::kF16;
  } else if (torch_dtype == "bfloat16") {
    c.weights_dtype = DType::kBF16;
  } else {
    return f.error("torch_dtype",
                   absl::StrCat("= \"", torch_dtype, "\" is not float32, float16 or bfloat16"));
  }
  if (absl::Status s = c.validate(); !s.ok()) return invalid(source, ": ", s.message());
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
  if (!gguf.has(p + ".attention.key_length") && c.hidden_size % c.num_heads != 0) {
    return invalid(gguf.path(), ": ", p, ".attention.head_count (", c.num_heads,
                   ") does not divide ", p, ".embedding_length (", c.hidden_size,
                   "), and there is no ", p, ".attention.key_length to say the head size");
  }
  if (absl::Status s =
          get_int(p + ".attention.key_length", c.hidden_size / c.num_heads, &c.head_dim);
      !s.ok()) {
    return s;
  }
  // The declared layer count must be the layers the file holds: a hostile block_count of 2^31
  // would otherwise size the step graph before any tensor is looked at.
  std::vector<std::string_view> names;
  for (const GgufTensorInfo& t : gguf.tensors()) names.push_back(t.name);
  if (absl::Status s = check_layer_count(c.num_layers, WeightNaming::kGguf, names); !s.ok()) {
    return invalid(gguf.path(), ": ", p, ".block_count ", s.message());
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
    if (!rot.ok()) return invalid(gguf.path(), ": ", rot.status().message());
    if (*rot != c.head_dim) {
      return invalid(gguf.path(), ": ", p, ".rope.dimension_count is ", *rot, " but head_dim is ",
                     c.head_dim, "; partial rotary embeddings are not supported");
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
