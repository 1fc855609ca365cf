// Pre-tokenizer splits (expected pieces produced by HF `tokenizers` Split/Digits) and UTF-8
// helpers.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "models/pretokenizer.h"
#include "models/unicode.h"

namespace kiln {
namespace {

std::vector<std::string> split(PreTokenizerKind kind, std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view p : pretokenize(kind, text)) out.emplace_back(p);
  return out;
}

using V = std::vector<std::string>;

const char* kText1 = "Hello world's 12345 THEY'RE   x\n\n  y\t\tz  ";
const char* kText2 = "(hello) --> foo!!\n\nbar 3.14 \u00a0word\u3000\u6f22\u5b57";
const char* kText3 = "a\r\n\r\n b  \n c   7x";

TEST(PreTokenizerTest, Gpt2) {
  EXPECT_EQ(split(PreTokenizerKind::kGpt2, kText1),
            (V{"Hello", " world", "'s", " 12345", " THEY", "'", "RE", "  ", " x", "\n\n ", " y",
               "\t", "\t", "z", "  "}));
  EXPECT_EQ(split(PreTokenizerKind::kGpt2, kText2),
            (V{"(", "hello", ")", " -->", " foo", "!!", "\n", "\n", "bar", " 3", ".", "14", " ",
               "\u00a0", "word", "\u3000", "\u6f22\u5b57"}));
  EXPECT_EQ(split(PreTokenizerKind::kGpt2, kText3),
            (V{"a", "\r\n\r\n", " b", "  \n", " c", "  ", " 7", "x"}));
}

TEST(PreTokenizerTest, Llama3) {
  EXPECT_EQ(split(PreTokenizerKind::kLlama3, kText1),
            (V{"Hello", " world", "'s", " ", "123", "45", " THEY", "'RE", "  ", " x", "\n\n", " ",
               " y", "\t", "\tz", "  "}));
  EXPECT_EQ(split(PreTokenizerKind::kLlama3, kText2),
            (V{"(hello", ")", " -->", " foo", "!!\n\n", "bar", " ", "3", ".", "14", " ",
               "\u00a0word", "\u3000\u6f22\u5b57"}));
  EXPECT_EQ(split(PreTokenizerKind::kLlama3, kText3),
            (V{"a", "\r\n\r\n", " b", "  \n", " c", "  ", " ", "7", "x"}));
}

TEST(PreTokenizerTest, Qwen2SplitsEveryDigit) {
  EXPECT_EQ(split(PreTokenizerKind::kQwen2, kText1),
            (V{"Hello", " world", "'s", " ", "1", "2", "3", "4", "5", " THEY", "'RE", "  ", " x",
               "\n\n", " ", " y", "\t", "\tz", "  "}));
  EXPECT_EQ(split(PreTokenizerKind::kQwen2, kText2),
            (V{"(hello", ")", " -->", " foo", "!!\n\n", "bar", " ", "3", ".", "1", "4", " ",
               "\u00a0word", "\u3000\u6f22\u5b57"}));
}

TEST(PreTokenizerTest, SmolLmDigitsThenGpt2) {
  EXPECT_EQ(split(PreTokenizerKind::kSmolLm, kText1),
            (V{"Hello", " world", "'s", " ",  "1",     "2",  "3",  "4",  "5", " THEY",
               "'",     "RE",     "  ", " x", "\n\n ", " y", "\t", "\t", "z", "  "}));
  EXPECT_EQ(split(PreTokenizerKind::kSmolLm, kText3),
            (V{"a", "\r\n\r\n", " b", "  \n", " c", "   ", "7", "x"}));
}

TEST(PreTokenizerTest, InvalidUtf8IsCoveredByteForByte) {
  const std::string text = "ab\xff\xfe cd\xe2\x82";
  for (PreTokenizerKind kind : {PreTokenizerKind::kGpt2, PreTokenizerKind::kLlama3,
                                PreTokenizerKind::kQwen2, PreTokenizerKind::kSmolLm}) {
    std::string joined;
    for (const std::string& p : split(kind, text)) joined += p;
    EXPECT_EQ(joined, text) << pre_tokenizer_name(kind);
  }
  EXPECT_TRUE(split(PreTokenizerKind::kGpt2, "").empty());
}

TEST(PreTokenizerTest, GgufNames) {
  EXPECT_EQ(*pre_tokenizer_from_gguf("smollm"), PreTokenizerKind::kSmolLm);
  EXPECT_EQ(*pre_tokenizer_from_gguf("llama-bpe"), PreTokenizerKind::kLlama3);
  EXPECT_EQ(*pre_tokenizer_from_gguf("qwen2"), PreTokenizerKind::kQwen2);
  EXPECT_EQ(*pre_tokenizer_from_gguf("gpt-2"), PreTokenizerKind::kGpt2);
  EXPECT_EQ(*pre_tokenizer_from_gguf("default"), PreTokenizerKind::kGpt2);
  absl::StatusOr<PreTokenizerKind> bad = pre_tokenizer_from_gguf("deepseek-coder");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("deepseek-coder"), std::string::npos);
  EXPECT_NE(bad.status().message().find("smollm"), std::string::npos);
}

TEST(UnicodeTest, ByteLevelAlphabetIsABijection) {
  for (int b = 0; b < 256; ++b) {
    EXPECT_EQ(unicode::unicode_to_byte(unicode::byte_to_unicode(static_cast<uint8_t>(b))), b);
  }
  EXPECT_EQ(unicode::byte_to_unicode(' '), U'\u0120');   // "Ġ"
  EXPECT_EQ(unicode::byte_to_unicode('\n'), U'\u010A');  // "Ċ"
  EXPECT_EQ(unicode::byte_to_unicode('A'), U'A');
  EXPECT_EQ(unicode::unicode_to_byte(U'\u0144'), -1);
}

TEST(UnicodeTest, CompletePrefixHoldsBackOnlyTruncatedSequences) {
  EXPECT_EQ(unicode::complete_utf8_prefix("abc"), 3u);
  EXPECT_EQ(unicode::complete_utf8_prefix("ab\xe4\xbd"), 2u);      // 你 missing its last byte
  EXPECT_EQ(unicode::complete_utf8_prefix("ab\xf0\x9f\x98"), 2u);  // 😀 missing one byte
  EXPECT_EQ(unicode::complete_utf8_prefix("ab\xff"), 3u);          // never valid: release it
  EXPECT_EQ(unicode::complete_utf8_prefix("ab\xe0\x80"), 4u);      // overlong: never valid
  EXPECT_EQ(unicode::complete_utf8_prefix("\xe4\xbd\xa0"), 3u);
  EXPECT_FALSE(unicode::is_valid_utf8("\xed\xa0\x80"));  // surrogate
  EXPECT_TRUE(unicode::is_valid_utf8("\xf4\x8f\xbf\xbf"));
  EXPECT_FALSE(unicode::is_valid_utf8("\xf4\x90\x80\x80"));
}

TEST(UnicodeTest, Categories) {
  EXPECT_TRUE(unicode::is_letter(U'\u6f22'));
  EXPECT_TRUE(unicode::is_letter(U'\u00e9'));
  EXPECT_FALSE(unicode::is_letter(U'\u0301'));  // combining mark: Mn, not L
  EXPECT_TRUE(unicode::is_number(U'\u0663'));   // Arabic-Indic three
  EXPECT_TRUE(unicode::is_number(U'\u2460'));   // circled one (No)
  EXPECT_TRUE(unicode::is_whitespace(U'\u3000'));
  EXPECT_TRUE(unicode::is_whitespace(U'\u00a0'));
  EXPECT_FALSE(unicode::is_whitespace(U'\u200b'));  // zero width space is not White_Space
}

}  // namespace
}  // namespace kiln
