// Builds a Tokenizer from GGUF metadata (tokenizer.ggml.* and tokenizer.chat_template).
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "models/gguf.h"
#include "models/tokenizer.h"

namespace kiln {
namespace {

// Optional integer key: -1 when absent, an error when present with a wrong type.
absl::StatusOr<int32_t> optional_id(const GgufFile& gguf, const std::string& key) {
  if (!gguf.has(key)) return -1;
  absl::StatusOr<int64_t> v = gguf.get_int(key);
  if (!v.ok()) return v.status();
  if (*v < -1 || *v > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %s = %d is not a token id", gguf.path(), key, *v));
  }
  return static_cast<int32_t>(*v);
}

absl::StatusOr<bool> optional_bool(const GgufFile& gguf, const std::string& key, bool fallback) {
  if (!gguf.has(key)) return fallback;
  return gguf.get_bool(key);
}

}  // namespace

absl::StatusOr<TokenizerSpec> Tokenizer::spec_from_gguf(const GgufFile& gguf) {
  const std::string& src = gguf.path();
  TokenizerSpec spec;
  spec.source = src;
  absl::StatusOr<std::string> model = gguf.get_string("tokenizer.ggml.model");
  if (!model.ok()) return model.status();
  if (*model == "gpt2") {
    spec.kind = TokenizerKind::kByteLevelBpe;
  } else if (*model == "llama") {
    spec.kind = TokenizerKind::kSentencePieceBpe;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(src, ": unsupported tokenizer.ggml.model '",
                                                   *model, "'; supported: gpt2, llama"));
  }
  absl::StatusOr<std::vector<std::string>> tokens = gguf.get_string_array("tokenizer.ggml.tokens");
  if (!tokens.ok()) return tokens.status();
  spec.vocab = std::move(*tokens);
  const size_t n = spec.vocab.size();

  if (gguf.has("tokenizer.ggml.token_type")) {
    absl::StatusOr<std::vector<int64_t>> types = gguf.get_int_array("tokenizer.ggml.token_type");
    if (!types.ok()) return types.status();
    if (types->size() != n) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: tokenizer.ggml.token_type has %d entries for %d tokens", src, types->size(), n));
    }
    spec.types.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      const int64_t t = (*types)[i];
      if (t < 1 || t > 6) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: tokenizer.ggml.token_type[%d] = %d is not a token type (1..6)", src, i, t));
      }
      spec.types.push_back(static_cast<TokenType>(t));
    }
  }
  if (gguf.has("tokenizer.ggml.scores")) {
    absl::StatusOr<std::vector<double>> scores = gguf.get_float_array("tokenizer.ggml.scores");
    if (!scores.ok()) return scores.status();
    spec.scores.assign(scores->begin(), scores->end());
  }
  if (spec.kind == TokenizerKind::kByteLevelBpe) {
    absl::StatusOr<std::vector<std::string>> merges =
        gguf.get_string_array("tokenizer.ggml.merges");
    if (!merges.ok()) return merges.status();
    spec.merges.reserve(merges->size());
    for (size_t i = 0; i < merges->size(); ++i) {
      const std::string& m = (*merges)[i];
      // Split at the first space after the first character, as llama.cpp does.
      const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
      if (sp == std::string::npos || sp + 1 >= m.size()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: tokenizer.ggml.merges[%d] ('%s') is not a pair \"a b\"", src, i, m));
      }
      spec.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
    }
    std::string pre = "default";
    if (gguf.has("tokenizer.ggml.pre")) {
      absl::StatusOr<std::string> p = gguf.get_string("tokenizer.ggml.pre");
      if (!p.ok()) return p.status();
      pre = *p;
    }
    absl::StatusOr<PreTokenizerKind> kind = pre_tokenizer_from_gguf(pre);
    if (!kind.ok())
      return absl::InvalidArgumentError(absl::StrCat(src, ": ", kind.status().message()));
    spec.pre_tokenizer = *kind;
    // llama.cpp uses whole-word lookups before merging for Llama-3's vocabulary (HF's
    // ignore_merges = true in its tokenizer.json).
    spec.ignore_merges = spec.pre_tokenizer == PreTokenizerKind::kLlama3;
  }

  for (auto [key, id] :
       {std::pair<const char*, int32_t*>{"tokenizer.ggml.bos_token_id", &spec.bos_id},
        {"tokenizer.ggml.eos_token_id", &spec.eos_id},
        {"tokenizer.ggml.unknown_token_id", &spec.unk_id},
        {"tokenizer.ggml.padding_token_id", &spec.pad_id}}) {
    absl::StatusOr<int32_t> v = optional_id(gguf, key);
    if (!v.ok()) return v.status();
    *id = *v;
  }
  const bool spm = spec.kind == TokenizerKind::kSentencePieceBpe;
  absl::StatusOr<bool> add_bos = optional_bool(gguf, "tokenizer.ggml.add_bos_token", spm);
  if (!add_bos.ok()) return add_bos.status();
  spec.add_bos = *add_bos;
  absl::StatusOr<bool> prefix = optional_bool(gguf, "tokenizer.ggml.add_space_prefix", spm);
  if (!prefix.ok()) return prefix.status();
  spec.add_space_prefix = *prefix;
  if (gguf.has("tokenizer.chat_template")) {
    absl::StatusOr<std::string> t = gguf.get_string("tokenizer.chat_template");
    if (!t.ok()) return t.status();
    spec.chat_template = std::move(*t);
  }
  return spec;
}

absl::StatusOr<Tokenizer> Tokenizer::from_gguf(const GgufFile& gguf) {
  absl::StatusOr<TokenizerSpec> spec = spec_from_gguf(gguf);
  if (!spec.ok()) return spec.status();
  return from_spec(std::move(*spec));
}

}  // namespace kiln
