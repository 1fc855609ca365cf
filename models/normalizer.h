// Text normalizers of Hugging Face tokenizer.json (Prepend, Replace, NFC/NFD/NFKC/NFKD and
// Sequences of them), applied before pre-tokenization.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kiln {

/// A normalizer flattened into the steps it applies in order. Empty: text is left as it is.
class Normalizer {
 public:
  enum class StepKind { kPrepend, kReplace, kNfc, kNfd, kNfkc, kNfkd };
  struct Step {
    StepKind kind;
    std::string a, b;  // Prepend: a = prefix; Replace: a -> b (literal strings)
  };

  Normalizer() = default;
  explicit Normalizer(std::vector<Step> steps) : steps_(std::move(steps)) {}
  /// Parses tokenizer.json's `normalizer` (null gives an empty one). Unsupported kinds (regex
  /// Replace, BertNormalizer, Precompiled, ...) are errors that name them; `src` prefixes errors.
  static absl::StatusOr<Normalizer> from_json(const nlohmann::json& j, std::string_view src);

  /// `text` normalized. As in HF, Prepend adds its prefix only to non-empty text. Invalid UTF-8
  /// bytes pass through unchanged.
  std::string apply(std::string_view text) const;
  bool empty() const { return steps_.empty(); }
  const std::vector<Step>& steps() const { return steps_; }

 private:
  std::vector<Step> steps_;
};

}  // namespace kiln
