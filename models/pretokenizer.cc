// Hand-written matchers for the pre-tokenizer regexes (see pretokenizer.h for the patterns).
#include "models/pretokenizer.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "models/unicode.h"

namespace kiln {
namespace {

using unicode::is_letter;
using unicode::is_number;
using unicode::is_whitespace;

// The text decoded once into code points; off[i] is the byte offset of cp[i], off[n] the end.
struct Chars {
  std::vector<char32_t> cp;
  std::vector<uint32_t> off;
};

Chars decode_all(std::string_view text) {
  Chars c;
  c.cp.reserve(text.size());
  c.off.reserve(text.size() + 1);
  for (size_t i = 0; i < text.size();) {
    unicode::DecodedChar d = unicode::decode_utf8(text, i);
    c.cp.push_back(d.cp);
    c.off.push_back(static_cast<uint32_t>(i));
    i += d.length;
  }
  c.off.push_back(static_cast<uint32_t>(text.size()));
  return c;
}

bool is_other(char32_t c) { return !is_whitespace(c) && !is_letter(c) && !is_number(c); }
bool is_newline(char32_t c) { return c == '\r' || c == '\n'; }
char32_t lower_ascii(char32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

// 's|'t|'re|'ve|'m|'ll|'d at i (optionally case-insensitive); returns the end or i.
size_t match_contraction(const std::vector<char32_t>& cp, size_t i, size_t n, bool fold) {
  if (cp[i] != '\'' || i + 1 >= n) return i;
  auto at = [&](size_t k) { return fold ? lower_ascii(cp[k]) : cp[k]; };
  const char32_t a = at(i + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
  if (i + 2 < n) {
    const char32_t b = at(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
  }
  return i;
}

template <typename Pred>
size_t extend(const std::vector<char32_t>& cp, size_t k, size_t n, Pred pred) {
  while (k < n && pred(cp[k])) ++k;
  return k;
}

// \s+(?!\S)|\s+ at a whitespace run starting at i: the run minus its last character when a
// non-space follows (that character then prefixes the next piece), else the whole run.
size_t match_trailing_space(const std::vector<char32_t>& cp, size_t i, size_t n) {
  const size_t j = extend(cp, i, n, is_whitespace);
  if (j == n || j - i < 2) return j;
  return j - 1;
}

// One GPT-2 regex match at i within [0, n); always consumes at least one character.
size_t match_gpt2(const std::vector<char32_t>& cp, size_t i, size_t n) {
  if (size_t j = match_contraction(cp, i, n, /*fold=*/false); j > i) return j;
  const size_t k = cp[i] == ' ' ? i + 1 : i;
  if (k < n) {
    if (is_letter(cp[k])) return extend(cp, k, n, is_letter);
    if (is_number(cp[k])) return extend(cp, k, n, is_number);
    if (is_other(cp[k])) return extend(cp, k, n, is_other);
  }
  return match_trailing_space(cp, i, n);
}

// One Llama-3 (max_digits = 3) or Qwen2 (max_digits = 1) regex match at i.
size_t match_llama3(const std::vector<char32_t>& cp, size_t i, size_t n, size_t max_digits) {
  if (size_t j = match_contraction(cp, i, n, /*fold=*/true); j > i) return j;
  const char32_t c = cp[i];
  if (is_letter(c)) return extend(cp, i, n, is_letter);
  if (!is_newline(c) && !is_number(c) && i + 1 < n && is_letter(cp[i + 1])) {
    return extend(cp, i + 1, n, is_letter);
  }
  if (is_number(c)) {
    size_t j = i;
    while (j < n && j - i < max_digits && is_number(cp[j])) ++j;
    return j;
  }
  const size_t k = c == ' ' ? i + 1 : i;
  if (k < n && is_other(cp[k])) return extend(cp, extend(cp, k, n, is_other), n, is_newline);
  // c is whitespace here. \s*[\r\n]+ ends just after the run's last newline, if it has one.
  const size_t j = extend(cp, i, n, is_whitespace);
  for (size_t p = j; p > i; --p) {
    if (is_newline(cp[p - 1])) return p;
  }
  return match_trailing_space(cp, i, n);
}

}  // namespace

std::string_view pre_tokenizer_name(PreTokenizerKind kind) {
  switch (kind) {
    case PreTokenizerKind::kGpt2: return "gpt2";
    case PreTokenizerKind::kLlama3: return "llama3";
    case PreTokenizerKind::kQwen2: return "qwen2";
    case PreTokenizerKind::kSmolLm: return "smollm";
  }
  return "?";
}

absl::StatusOr<PreTokenizerKind> pre_tokenizer_from_gguf(std::string_view pre) {
  // llama.cpp groups several model families under one regex; these are the ones kiln matches.
  if (pre == "gpt-2" || pre == "gpt2" || pre == "default") return PreTokenizerKind::kGpt2;
  if (pre == "llama-bpe" || pre == "llama3" || pre == "smaug-bpe") return PreTokenizerKind::kLlama3;
  if (pre == "qwen2") return PreTokenizerKind::kQwen2;
  if (pre == "smollm" || pre == "starcoder") return PreTokenizerKind::kSmolLm;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown pre-tokenizer '", std::string(pre),
      "' (tokenizer.ggml.pre); supported: gpt-2, default, llama-bpe, smaug-bpe, qwen2, smollm, "
      "starcoder"));
}

std::vector<std::string_view> pretokenize(PreTokenizerKind kind, std::string_view text) {
  std::vector<std::string_view> out;
  if (text.empty()) return out;
  const Chars c = decode_all(text);
  const size_t n = c.cp.size();
  auto emit = [&](size_t a, size_t b) {
    out.push_back(text.substr(c.off[a], c.off[b] - c.off[a]));
  };
  size_t i = 0;
  switch (kind) {
    case PreTokenizerKind::kGpt2:
      while (i < n) {
        const size_t j = match_gpt2(c.cp, i, n);
        emit(i, j);
        i = j;
      }
      break;
    case PreTokenizerKind::kLlama3:
    case PreTokenizerKind::kQwen2: {
      const size_t max_digits = kind == PreTokenizerKind::kLlama3 ? 3 : 1;
      while (i < n) {
        const size_t j = match_llama3(c.cp, i, n, max_digits);
        emit(i, j);
        i = j;
      }
      break;
    }
    case PreTokenizerKind::kSmolLm:
      // Digits split first; GPT-2's regex then sees each digit-free segment as a whole text, so
      // `(?!\S)` at a segment's end behaves as at the end of the input (as in HF and llama.cpp).
      while (i < n) {
        if (is_number(c.cp[i])) {
          emit(i, i + 1);
          ++i;
          continue;
        }
        const size_t seg_end = extend(c.cp, i, n, [](char32_t x) { return !is_number(x); });
        while (i < seg_end) {
          const size_t j = match_gpt2(c.cp, i, seg_end);
          emit(i, j);
          i = j;
        }
      }
      break;
  }
  return out;
}

}  // namespace kiln
