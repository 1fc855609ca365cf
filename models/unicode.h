// UTF-8 decoding, Unicode character classes (via ICU) and GPT-2's byte<->unicode mapping.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kiln::unicode {

/// One decoded code point and the number of bytes it spans in the source. Invalid UTF-8 decodes
/// to `kInvalid` with length 1 so that callers can always make progress over arbitrary bytes.
struct DecodedChar {
  char32_t cp;
  int length;
};
inline constexpr char32_t kInvalid = 0xFFFFFFFF;

/// Decodes the code point starting at `text[pos]` (strict: no overlongs, surrogates or values
/// above U+10FFFF).
DecodedChar decode_utf8(std::string_view text, size_t pos);

/// Appends the UTF-8 encoding of `cp` (which must be a valid scalar value).
void append_utf8(char32_t cp, std::string& out);

/// True when `text` is entirely well-formed UTF-8.
bool is_valid_utf8(std::string_view text);

/// Length of the longest prefix of `text` that ends on a boundary after which no byte can still
/// complete a code point: bytes of a truncated but so-far valid sequence at the end are held back.
/// Used by streaming detokenization to never split a code point.
size_t complete_utf8_prefix(std::string_view text);

/// Character classes used by the pre-tokenizer regexes. `kInvalid` is in none of them.
bool is_letter(char32_t cp);      // \p{L}: Lu Ll Lt Lm Lo
bool is_number(char32_t cp);      // \p{N}: Nd Nl No
bool is_whitespace(char32_t cp);  // \s: the Unicode White_Space property
/// \w as the Rust regex crate (and so HF `tokenizers`) defines it: Alphabetic, M, Nd, Pc,
/// Join_Control. Used by added tokens' single_word rule.
bool is_word_char(char32_t cp);

/// Unicode normalization forms (HF normalizers NFC, NFD, NFKC, NFKD).
enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
/// `text` in normal form `form`. Runs of invalid UTF-8 bytes are kept as they are (and split the
/// text: no composition across them), so arbitrary bytes survive normalization.
std::string normalize(std::string_view text, NormalForm form);

/// GPT-2's bytes_to_unicode: every byte maps to a printable code point (printable ASCII and
/// Latin-1 map to themselves, the rest to U+0100 + n) so byte-level vocabularies are text.
char32_t byte_to_unicode(uint8_t byte);
/// Inverse of byte_to_unicode; -1 when `cp` is not the image of any byte.
int unicode_to_byte(char32_t cp);
/// Maps every byte of `bytes` through byte_to_unicode, as UTF-8.
std::string bytes_to_byte_level(std::string_view bytes);

}  // namespace kiln::unicode
