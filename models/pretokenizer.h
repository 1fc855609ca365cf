// Pre-tokenizers: hand-written equivalents of the split regexes of GPT-2, Llama-3, Qwen2, SmolLM2.
#pragma once

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln {

/// Which split regex runs before BPE. Each is implemented as a hand-written matcher over code
/// points (no regex engine handles \p{L} portably); they follow the regexes' leftmost-alternative,
/// greedy-with-backtracking semantics exactly.
enum class PreTokenizerKind {
  /// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kGpt2,
  /// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
  /// \s*[\r\n]+|\s+(?!\S)|\s+
  kLlama3,
  /// Llama-3's regex with \p{N} (one digit per piece) instead of \p{N}{1,3}.
  kQwen2,
  /// SmolLM2 (and StarCoder): every \p{N} is its own piece, the text between them is split with
  /// GPT-2's regex (HF: Sequence[Digits(individual_digits), ByteLevel(use_regex)]).
  kSmolLm,
};

/// A stable name for messages and plan manifests ("gpt2", "llama3", "qwen2", "smollm").
std::string_view pre_tokenizer_name(PreTokenizerKind kind);

/// Maps GGUF's `tokenizer.ggml.pre` to a kind; an unknown value is an error that names it and
/// the supported values.
absl::StatusOr<PreTokenizerKind> pre_tokenizer_from_gguf(std::string_view pre);

/// Splits `text` into pieces (views into `text`, in order, covering it exactly). Invalid UTF-8
/// bytes are treated as one-byte "other" characters (neither letter, number nor space).
std::vector<std::string_view> pretokenize(PreTokenizerKind kind, std::string_view text);

}  // namespace kiln
