// UTF-8 helpers, ICU-backed character classes and the GPT-2 byte-level alphabet.
#include "models/unicode.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <array>
#include <utility>

namespace kiln::unicode {

DecodedChar decode_utf8(std::string_view text, size_t pos) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  const unsigned char b0 = s[pos];
  if (b0 < 0x80) return {b0, 1};
  int len;
  char32_t cp;
  // The valid range of the second byte depends on the first (RFC 3629 table); this rejects
  // overlongs, surrogates and code points above U+10FFFF in one place.
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {kInvalid, 1};
  }
  if (pos + len > n) return {kInvalid, 1};
  for (int i = 1; i < len; ++i) {
    const unsigned char b = s[pos + i];
    const unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
    if (b < l || b > h) return {kInvalid, 1};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {cp, len};
}

void append_utf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool is_valid_utf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    DecodedChar c = decode_utf8(text, i);
    if (c.cp == kInvalid) return false;
    i += c.length;
  }
  return true;
}

namespace {

// Valid range of the second byte of a sequence led by `b0` (RFC 3629); {1, 0} when `b0` cannot
// lead a multi-byte sequence.
std::pair<unsigned char, unsigned char> second_byte_range(unsigned char b0) {
  if (b0 >= 0xC2 && b0 <= 0xDF) return {0x80, 0xBF};
  if (b0 == 0xE0) return {0xA0, 0xBF};
  if (b0 == 0xED) return {0x80, 0x9F};
  if (b0 >= 0xE1 && b0 <= 0xEF) return {0x80, 0xBF};
  if (b0 == 0xF0) return {0x90, 0xBF};
  if (b0 == 0xF4) return {0x80, 0x8F};
  if (b0 >= 0xF1 && b0 <= 0xF3) return {0x80, 0xBF};
  return {1, 0};
}

}  // namespace

size_t complete_utf8_prefix(std::string_view text) {
  // Only the last (up to 3) bytes can belong to a truncated sequence: find the last lead byte.
  const size_t n = text.size();
  const size_t start = n > 3 ? n - 3 : 0;
  for (size_t i = n; i > start;) {
    --i;
    const auto b0 = static_cast<unsigned char>(text[i]);
    if ((b0 & 0xC0) == 0x80) continue;
    const int need = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC0 ? 2 : 1;
    if (i + need <= n) return n;  // complete (or invalid): nothing can change it any more
    // Truncated: hold it back only while the bytes present could still become valid.
    auto [lo, hi] = second_byte_range(b0);
    if (lo > hi) return n;
    for (size_t j = i + 1; j < n; ++j) {
      const auto b = static_cast<unsigned char>(text[j]);
      if (j == i + 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) return n;
    }
    return i;
  }
  return n;
}

bool is_letter(char32_t cp) {
  if (cp == kInvalid) return false;
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return (U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_L_MASK) != 0;
}

bool is_number(char32_t cp) {
  if (cp == kInvalid) return false;
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return (U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_N_MASK) != 0;
}

bool is_whitespace(char32_t cp) {
  if (cp == kInvalid) return false;
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  return u_isUWhiteSpace(static_cast<UChar32>(cp));
}

bool is_word_char(char32_t cp) {
  if (cp == kInvalid) return false;
  if (cp < 0x80) return is_letter(cp) || is_number(cp) || cp == '_';
  const auto c = static_cast<UChar32>(cp);
  return u_hasBinaryProperty(c, UCHAR_ALPHABETIC) || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL) ||
         (U_GET_GC_MASK(c) & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0;
}

std::string normalize(std::string_view text, NormalForm form) {
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* norm = nullptr;
  switch (form) {
    case NormalForm::kNfc: norm = icu::Normalizer2::getNFCInstance(err); break;
    case NormalForm::kNfd: norm = icu::Normalizer2::getNFDInstance(err); break;
    case NormalForm::kNfkc: norm = icu::Normalizer2::getNFKCInstance(err); break;
    case NormalForm::kNfkd: norm = icu::Normalizer2::getNFKDInstance(err); break;
  }
  if (U_FAILURE(err) || norm == nullptr) return std::string(text);  // ICU data missing
  std::string out;
  out.reserve(text.size());
  auto flush_valid = [&](std::string_view run) {
    if (run.empty()) return;
    const icu::UnicodeString src = icu::UnicodeString::fromUTF8(
        icu::StringPiece(run.data(), static_cast<int32_t>(run.size())));
    UErrorCode e = U_ZERO_ERROR;
    const icu::UnicodeString dst = norm->normalize(src, e);
    if (U_FAILURE(e)) {
      out.append(run);
    } else {
      dst.toUTF8String(out);
    }
  };
  size_t run_start = 0;
  for (size_t i = 0; i < text.size();) {
    const DecodedChar c = decode_utf8(text, i);
    if (c.cp == kInvalid) {
      flush_valid(text.substr(run_start, i - run_start));
      out.push_back(text[i]);
      run_start = i + 1;
    }
    i += c.length;
  }
  flush_valid(text.substr(run_start));
  return out;
}

namespace {

struct ByteLevelTables {
  std::array<char32_t, 256> to_unicode{};
  std::array<int16_t, 324> to_byte{};  // indexed by code point; the image is U+0021..U+0143
  ByteLevelTables() {
    to_byte.fill(-1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      to_unicode[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      to_byte[to_unicode[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelTables& tables() {
  static const ByteLevelTables t;
  return t;
}

}  // namespace

char32_t byte_to_unicode(uint8_t byte) { return tables().to_unicode[byte]; }

int unicode_to_byte(char32_t cp) { return cp < 324 ? tables().to_byte[cp] : -1; }

std::string bytes_to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) append_utf8(byte_to_unicode(static_cast<uint8_t>(c)), out);
  return out;
}

}  // namespace kiln::unicode
