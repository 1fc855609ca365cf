// Loads a Hugging Face tokenizer.json (+ tokenizer_config.json beside it) into a TokenizerSpec.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/tokenizer.h"
#include "nlohmann/json.hpp"

namespace kiln {
namespace {

using json = nlohmann::json;

// The split regexes HF tokenizer.json files carry for Llama-3 and Qwen2 (Split + ByteLevel
// without its own regex); matched verbatim so a different regex is never silently mistaken.
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kSupportedPre =
    "supported: ByteLevel(use_regex=true) [gpt2], Sequence[Digits(individual_digits=true), "
    "ByteLevel(use_regex=true)] [smollm], Sequence[Split(Llama-3 or Qwen2 regex), "
    "ByteLevel(use_regex=false)] [llama3, qwen2]";

absl::StatusOr<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string type_of(const json& j) {
  if (!j.is_object()) return "";
  auto it = j.find("type");
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

bool bool_field(const json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

bool is_byte_level_with_regex(const json& j, bool want_regex) {
  return type_of(j) == "ByteLevel" && bool_field(j, "use_regex", true) == want_regex &&
         !bool_field(j, "add_prefix_space", false);
}

// A short rendering of a pre_tokenizer for error messages.
std::string describe(const json& j) {
  std::string s = j.dump();
  return s.size() > 200 ? s.substr(0, 200) + "..." : s;
}

absl::StatusOr<PreTokenizerKind> pre_tokenizer_from_json(const json& pre, std::string_view src) {
  if (is_byte_level_with_regex(pre, true)) return PreTokenizerKind::kGpt2;
  if (type_of(pre) == "Sequence" && pre.contains("pretokenizers") &&
      pre["pretokenizers"].is_array() && pre["pretokenizers"].size() == 2) {
    const json& a = pre["pretokenizers"][0];
    const json& b = pre["pretokenizers"][1];
    if (type_of(a) == "Digits" && bool_field(a, "individual_digits", false) &&
        is_byte_level_with_regex(b, true)) {
      return PreTokenizerKind::kSmolLm;
    }
    if (type_of(a) == "Split" && is_byte_level_with_regex(b, false) && a.contains("pattern") &&
        a["pattern"].is_object() && a["pattern"].contains("Regex") &&
        a["pattern"]["Regex"].is_string()) {
      const std::string re = a["pattern"]["Regex"].get<std::string>();
      if (re == kLlama3Regex) return PreTokenizerKind::kLlama3;
      if (re == kQwen2Regex) return PreTokenizerKind::kQwen2;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(std::string(src), ": unknown pre_tokenizer ",
                                                 describe(pre), "; ", std::string(kSupportedPre)));
}

// bos_token / eos_token in tokenizer_config.json: a string or {"content": ...}.
std::string token_field(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return "";
}

}  // namespace

absl::StatusOr<Tokenizer> Tokenizer::from_tokenizer_json_text(std::string_view tokenizer_json,
                                                              std::string_view config_json,
                                                              std::string_view source) {
  const std::string src(source);
  const json root = json::parse(tokenizer_json.begin(), tokenizer_json.end(), nullptr,
                                /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": not a valid JSON object"));
  }
  auto model_it = root.find("model");
  if (model_it == root.end() || !model_it->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": missing object 'model'"));
  }
  const json& model = *model_it;
  std::string model_type = type_of(model);
  if (model_type.empty() && model.contains("merges")) model_type = "BPE";  // older files omit it
  if (model_type != "BPE") {
    return absl::InvalidArgumentError(
        absl::StrCat(src, ": unknown model type '", model_type, "' in model.type; supported: BPE"));
  }
  if (bool_field(model, "byte_fallback", false)) {
    return absl::UnimplementedError(
        absl::StrCat(src,
                     ": SentencePiece-style BPE (model.byte_fallback = true) is not supported from "
                     "tokenizer.json yet; load the model's GGUF instead"));
  }

  TokenizerSpec spec;
  spec.kind = TokenizerKind::kByteLevelBpe;
  spec.source = src;
  spec.ignore_merges = bool_field(model, "ignore_merges", false);

  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": missing object 'model.vocab'"));
  }
  // Ids come from the vocab and added_tokens; gaps (unusual) stay empty, unused entries.
  constexpr int64_t kMaxVocab = 1 << 24;
  auto place = [&](const std::string& text, const json& id_json, const std::string& where,
                   TokenType type) -> absl::Status {
    if (!id_json.is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat(src, ": ", where, " has a non-integer id"));
    }
    const int64_t id = id_json.get<int64_t>();
    if (id < 0 || id >= kMaxVocab) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s has id %d outside [0, %d)", src, where, id, kMaxVocab));
    }
    if (static_cast<size_t>(id) >= spec.vocab.size()) {
      spec.vocab.resize(id + 1);
      spec.types.resize(id + 1, TokenType::kUnused);
    }
    spec.vocab[id] = text;
    spec.types[id] = type;
    return absl::OkStatus();
  };
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    absl::Status s = place(it.key(), it.value(), absl::StrCat("model.vocab['", it.key(), "']"),
                           TokenType::kNormal);
    if (!s.ok()) return s;
  }
  if (auto added = root.find("added_tokens"); added != root.end() && added->is_array()) {
    for (size_t i = 0; i < added->size(); ++i) {
      const json& a = (*added)[i];
      const std::string where = absl::StrCat("added_tokens[", i, "]");
      if (!a.is_object() || !a.contains("content") || !a["content"].is_string() ||
          !a.contains("id")) {
        return absl::InvalidArgumentError(
            absl::StrCat(src, ": ", where, " needs a string 'content' and an integer 'id'"));
      }
      const TokenType type =
          bool_field(a, "special", false) ? TokenType::kControl : TokenType::kUserDefined;
      absl::Status s = place(a["content"].get<std::string>(), a["id"], where, type);
      if (!s.ok()) return s;
    }
  }

  auto merges_it = model.find("merges");
  if (merges_it == model.end() || !merges_it->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": missing array 'model.merges'"));
  }
  spec.merges.reserve(merges_it->size());
  for (size_t i = 0; i < merges_it->size(); ++i) {
    const json& m = (*merges_it)[i];
    // Two spellings exist: "a b" (older files) and ["a", "b"] (tokenizers >= 0.20).
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp != std::string::npos && sp > 0 && sp + 1 < s.size() &&
          s.find(' ', sp + 1) == std::string::npos) {
        spec.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
        continue;
      }
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      spec.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      continue;
    }
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: model.merges[%d] is not a pair (expected \"a b\" or [\"a\", \"b\"])", src, i));
  }

  auto pre_it = root.find("pre_tokenizer");
  if (pre_it == root.end() || pre_it->is_null()) {
    return absl::InvalidArgumentError(absl::StrCat(
        src, ": no pre_tokenizer; byte-level BPE needs one (", std::string(kSupportedPre), ")"));
  }
  absl::StatusOr<PreTokenizerKind> pre = pre_tokenizer_from_json(*pre_it, src);
  if (!pre.ok()) return pre.status();
  spec.pre_tokenizer = *pre;

  if (!config_json.empty()) {
    const json config =
        json::parse(config_json.begin(), config_json.end(), nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(src, ": tokenizer_config.json is not a valid JSON object"));
    }
    auto find_id = [&](const std::string& text) -> int32_t {
      for (size_t i = 0; i < spec.vocab.size(); ++i) {
        if (spec.vocab[i] == text) return static_cast<int32_t>(i);
      }
      return -1;
    };
    if (std::string bos = token_field(config, "bos_token"); !bos.empty())
      spec.bos_id = find_id(bos);
    if (std::string eos = token_field(config, "eos_token"); !eos.empty())
      spec.eos_id = find_id(eos);
    if (std::string unk = token_field(config, "unk_token"); !unk.empty())
      spec.unk_id = find_id(unk);
    if (std::string pad = token_field(config, "pad_token"); !pad.empty())
      spec.pad_id = find_id(pad);
    spec.add_bos = bool_field(config, "add_bos_token", false);
    if (auto ct = config.find("chat_template"); ct != config.end()) {
      if (ct->is_string()) {
        spec.chat_template = ct->get<std::string>();
      } else if (ct->is_array()) {  // [{"name": "default", "template": ...}, ...]
        for (const json& t : *ct) {
          if (t.is_object() && t.contains("name") && t["name"] == "default" &&
              t.contains("template") && t["template"].is_string()) {
            spec.chat_template = t["template"].get<std::string>();
          }
        }
      }
    }
  }
  return from_spec(std::move(spec));
}

absl::StatusOr<Tokenizer> Tokenizer::from_tokenizer_json(const std::string& path) {
  absl::StatusOr<std::string> text = read_file(path);
  if (!text.ok()) return text.status();
  std::string config;
  const std::filesystem::path config_path =
      std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (std::filesystem::exists(config_path, ec)) {
    absl::StatusOr<std::string> c = read_file(config_path.string());
    if (!c.ok()) return c.status();
    config = std::move(*c);
  }
  return from_tokenizer_json_text(*text, config, path);
}

}  // namespace kiln
