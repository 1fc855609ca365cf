// Loads a Hugging Face tokenizer.json (+ tokenizer_config.json beside it) into a TokenizerSpec.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/json_sequence.h"
#include "models/normalizer.h"
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

// tokenizer.json files are tens of MB at most (Llama-3: 9 MB); anything far larger is not one.
constexpr int64_t kMaxTokenizerFileBytes = int64_t{1} << 30;

// Reads a whole file after checking that it is a regular file of sane size: a FIFO, a device such
// as /dev/zero or a directory would otherwise block or read forever. O_NONBLOCK makes opening a
// FIFO return at once (instead of waiting for a writer) so that fstat can refuse it.
absl::StatusOr<std::string> read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open (", std::strerror(errno), ")"));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot stat (", std::strerror(errno), ")"));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": not a regular file (a FIFO, device or directory); pass the path of "
                     "the JSON file itself"));
  }
  if (st.st_size > kMaxTokenizerFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %d bytes is too large for a tokenizer file (limit %d)", path,
                        static_cast<int64_t>(st.st_size), kMaxTokenizerFileBytes));
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t r = ::read(fd, text.data() + done, text.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      return absl::DataLossError(absl::StrCat(path, ": short read (",
                                              r < 0 ? std::strerror(errno) : "end of file",
                                              "; did the file change while it was read?)"));
    }
    done += static_cast<size_t>(r);
  }
  return text;
}

bool bool_field(const json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

bool is_byte_level_with_regex(const json& j, bool want_regex) {
  return json_type(j) == "ByteLevel" && bool_field(j, "use_regex", true) == want_regex &&
         !bool_field(j, "add_prefix_space", false);
}

absl::StatusOr<PreTokenizerKind> pre_tokenizer_from_json(const json& pre, std::string_view src) {
  const std::string what = absl::StrCat(std::string(src), ": pre_tokenizer");
  absl::StatusOr<std::vector<const json*>> leaves = flatten_sequence(pre, "pretokenizers", what);
  if (!leaves.ok()) return leaves.status();
  const std::vector<const json*>& l = *leaves;
  if (l.size() == 1 && is_byte_level_with_regex(*l[0], true)) return PreTokenizerKind::kGpt2;
  if (l.size() == 2) {
    const json& a = *l[0];
    const json& b = *l[1];
    if (json_type(a) == "Digits" && bool_field(a, "individual_digits", false) &&
        is_byte_level_with_regex(b, true)) {
      return PreTokenizerKind::kSmolLm;
    }
    if (json_type(a) == "Split" && is_byte_level_with_regex(b, false) && a.contains("pattern") &&
        a["pattern"].is_object() && a["pattern"].contains("Regex") &&
        a["pattern"]["Regex"].is_string()) {
      const std::string re = a["pattern"]["Regex"].get<std::string>();
      if (re == kLlama3Regex) return PreTokenizerKind::kLlama3;
      if (re == kQwen2Regex) return PreTokenizerKind::kQwen2;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(std::string(src), ": unknown pre_tokenizer ",
                                                 describe_json(pre), "; ",
                                                 std::string(kSupportedPre)));
}

// The Metaspace pre-tokenizer of a SentencePiece-style BPE (null: none); anything else is an
// error naming what is supported.
absl::StatusOr<std::optional<Metaspace>> metaspace_from_json(const json& pre,
                                                             std::string_view src) {
  const std::string what = absl::StrCat(std::string(src), ": pre_tokenizer");
  absl::StatusOr<std::vector<const json*>> leaves = flatten_sequence(pre, "pretokenizers", what);
  if (!leaves.ok()) return leaves.status();
  if (leaves->empty()) return std::nullopt;
  const json& m = *(*leaves)[0];
  if (leaves->size() != 1 || json_type(m) != "Metaspace") {
    return absl::UnimplementedError(absl::StrCat(
        what, " ", describe_json(pre),
        " is not supported for SentencePiece-style BPE (byte_fallback); supported: none, or "
        "Metaspace"));
  }
  Metaspace out;
  if (auto r = m.find("replacement"); r != m.end()) {
    if (!r->is_string() || r->get<std::string>().empty()) {
      return absl::InvalidArgumentError(what + " Metaspace: 'replacement' must be a character");
    }
    out.replacement = r->get<std::string>();
  }
  std::string scheme = "always";  // HF's default
  if (auto p = m.find("prepend_scheme"); p != m.end() && !p->is_null()) {
    if (!p->is_string()) return absl::InvalidArgumentError(what + " Metaspace: bad prepend_scheme");
    scheme = p->get<std::string>();
  } else if (!bool_field(m, "add_prefix_space", true)) {
    scheme = "never";  // files written before prepend_scheme existed
  }
  if (scheme == "always") {
    out.prepend = PrependScheme::kAlways;
  } else if (scheme == "first") {
    out.prepend = PrependScheme::kFirst;
  } else if (scheme == "never") {
    out.prepend = PrependScheme::kNever;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(what, " Metaspace: prepend_scheme '", scheme,
                                                   "' is not one of always, first, never"));
  }
  out.split = bool_field(m, "split", true);
  return out;
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
  std::string model_type = json_type(model);
  if (model_type.empty() && model.contains("merges")) model_type = "BPE";  // older files omit it
  if (model_type != "BPE") {
    return absl::InvalidArgumentError(
        absl::StrCat(src, ": unknown model type '", model_type, "' in model.type; supported: BPE"));
  }
  for (const char* key : {"dropout", "continuing_subword_prefix", "end_of_word_suffix"}) {
    if (auto it = model.find(key); it != model.end() && !it->is_null() &&
                                   !(it->is_string() && it->get<std::string>().empty())) {
      return absl::UnimplementedError(absl::StrCat(src, ": model.", key, " = ", describe_json(*it),
                                                   " is not supported (kiln's BPE has none)"));
    }
  }

  TokenizerSpec spec;
  const bool byte_fallback = bool_field(model, "byte_fallback", false);
  spec.kind = byte_fallback ? TokenizerKind::kBpeByteFallback : TokenizerKind::kByteLevelBpe;
  spec.source = src;
  spec.ignore_merges = bool_field(model, "ignore_merges", false);
  spec.byte_fallback = byte_fallback;
  spec.fuse_unk = bool_field(model, "fuse_unk", false);
  if (auto norm = root.find("normalizer"); norm != root.end()) {
    absl::StatusOr<Normalizer> n = Normalizer::from_json(*norm, src);
    if (!n.ok()) return n.status();
    spec.normalizer = *std::move(n);
  }
  // kiln's decode follows from the model kind; the decoder is only checked to be well-formed.
  if (auto dec = root.find("decoder"); dec != root.end()) {
    absl::StatusOr<std::vector<const json*>> d =
        flatten_sequence(*dec, "decoders", absl::StrCat(src, ": decoder"));
    if (!d.ok()) return d.status();
  }

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
      const bool special = bool_field(a, "special", false);
      const TokenType type = special ? TokenType::kControl : TokenType::kUserDefined;
      absl::Status s = place(a["content"].get<std::string>(), a["id"], where, type);
      if (!s.ok()) return s;
      AddedTokenOptions o;
      o.lstrip = bool_field(a, "lstrip", false);
      o.rstrip = bool_field(a, "rstrip", false);
      o.single_word = bool_field(a, "single_word", false);
      o.normalized = bool_field(a, "normalized", !special);
      spec.added_token_options.emplace_back(a["id"].get<int32_t>(), o);
    }
  }

  if (auto unk = model.find("unk_token"); unk != model.end() && unk->is_string()) {
    for (size_t i = 0; i < spec.vocab.size(); ++i) {
      if (spec.vocab[i] == unk->get<std::string>()) {
        spec.unk_id = static_cast<int32_t>(i);
        break;
      }
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
  if (spec.kind == TokenizerKind::kBpeByteFallback) {
    static const json kNull;  // a reference, never a copy: the component may be deeply nested
    absl::StatusOr<std::optional<Metaspace>> m =
        metaspace_from_json(pre_it == root.end() ? kNull : *pre_it, src);
    if (!m.ok()) return m.status();
    spec.metaspace = *m;
  } else if (pre_it == root.end() || pre_it->is_null()) {
    return absl::InvalidArgumentError(absl::StrCat(
        src, ": no pre_tokenizer; byte-level BPE needs one (", std::string(kSupportedPre), ")"));
  } else {
    absl::StatusOr<PreTokenizerKind> pre = pre_tokenizer_from_json(*pre_it, src);
    if (!pre.ok()) return pre.status();
    spec.pre_tokenizer = *pre;
  }

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
  absl::StatusOr<Tokenizer> t = from_tokenizer_json_text(*text, config, path);
  if (!t.ok() || !t->spec_.chat_template.empty()) return t;
  // transformers >= 4.43 saves the template as chat_template.jinja beside tokenizer_config.json.
  const std::filesystem::path jinja_path =
      std::filesystem::path(path).parent_path() / "chat_template.jinja";
  if (std::filesystem::exists(jinja_path, ec)) {
    absl::StatusOr<std::string> j = read_file(jinja_path.string());
    if (!j.ok()) return j.status();
    t->spec_.chat_template = std::move(*j);
  }
  return t;
}

}  // namespace kiln
