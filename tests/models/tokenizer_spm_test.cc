// SentencePiece-style BPE on a hand-built vocabulary: spaces as U+2581, score order, byte fallback.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "models/tokenizer.h"
#include "models/unicode.h"

namespace kiln {
namespace {

// ids: 0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>, then pieces with scores.
Tokenizer make_spm(bool add_space_prefix = true) {
  TokenizerSpec spec;
  spec.kind = TokenizerKind::kSentencePieceBpe;
  spec.source = "hand-built spm";
  spec.vocab = {"<unk>", "<s>", "</s>"};
  spec.types = {TokenType::kUnknown, TokenType::kControl, TokenType::kControl};
  spec.scores = {0, 0, 0};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    spec.vocab.push_back(name);
    spec.types.push_back(TokenType::kByte);
    spec.scores.push_back(0);
  }
  // Higher score merges first. "▁h" + "e" ... the pieces a tiny SentencePiece model would have.
  const std::vector<std::pair<std::string, float>> pieces = {
      {"\xE2\x96\x81", -1},  // 259 ▁
      {"h", -2},
      {"e", -2},
      {"l", -2},
      {"o", -2},
      {"w", -2},
      {"r", -2},
      {"d", -2},                  // 260..266
      {"\xE2\x96\x81h", -3},      // 267 ▁h
      {"ll", -4},                 // 268
      {"\xE2\x96\x81he", -5},     // 269
      {"\xE2\x96\x81hell", -6},   // 270
      {"lo", -3},                 // 271: scores higher than "ll" -> "hel"+"lo" wins over "hell"+"o"
      {"\xE2\x96\x81hel", -7},    // 272
      {"\xE2\x96\x81hello", -8},  // 273
      {"\xE4\xBD\xA0", -2},       // 274 你
  };
  for (const auto& [p, s] : pieces) {
    spec.vocab.push_back(p);
    spec.types.push_back(TokenType::kNormal);
    spec.scores.push_back(s);
  }
  spec.unk_id = 0;
  spec.bos_id = 1;
  spec.eos_id = 2;
  spec.add_bos = true;
  spec.add_space_prefix = add_space_prefix;
  absl::StatusOr<Tokenizer> t = Tokenizer::from_spec(std::move(spec));
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(*t);
}

TEST(SentencePieceTest, ScoresDecideTheMergeOrder) {
  const Tokenizer t = make_spm();
  // ▁ h e l l o: ▁h and lo tie at -3 (leftmost first), then lo; "ll" (-4) is now blocked, so
  // ▁h+e -> ▁he, ▁he+l -> ▁hel, ▁hel+lo -> ▁hello.
  EXPECT_EQ(t.encode("hello"), (std::vector<int32_t>{273}));
  EXPECT_EQ(t.encode("hello", true, /*add_bos=*/true), (std::vector<int32_t>{1, 273}));
}

TEST(SentencePieceTest, SpacesBecomeMarkersAndRoundTrip) {
  const Tokenizer t = make_spm();
  const std::vector<int32_t> ids = t.encode("hello world");
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 273);
  EXPECT_EQ(ids[1], 259);                   // ▁ before "world"
  EXPECT_EQ(t.decode(ids), "hello world");  // the prefixed space is stripped again
  std::vector<int32_t> with_bos = t.encode("hello world", true, true);
  EXPECT_EQ(t.decode(with_bos, /*skip_special=*/true), "hello world");
}

TEST(SentencePieceTest, ByteFallbackForUnknownCharacters) {
  const Tokenizer t = make_spm();
  // "é" is not in the vocab: its two UTF-8 bytes become <0xC3> <0xA9>.
  const std::vector<int32_t> ids = t.encode("\xC3\xA9");
  EXPECT_EQ(ids, (std::vector<int32_t>{259, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(t.decode(ids), "\xC3\xA9");
  EXPECT_EQ(t.encode("\xE4\xBD\xA0"), (std::vector<int32_t>{259, 274}));
  // Streaming holds the first byte back until the code point is complete.
  Tokenizer::StreamDecoder dec(t);
  EXPECT_EQ(dec.push(259), "");  // leading space stripped
  EXPECT_EQ(dec.push(3 + 0xC3), "");
  EXPECT_EQ(dec.push(3 + 0xA9), "\xC3\xA9");
}

TEST(SentencePieceTest, SpacePrefixAfterSpecialTokensAndOptOut) {
  const Tokenizer t = make_spm();
  EXPECT_EQ(t.encode("<s>hello"), (std::vector<int32_t>{1, 273}));
  EXPECT_EQ(t.encode("<s>hello", /*parse_special=*/false).front(),
            259);  // "▁" then the bytes of "<s>"
  const Tokenizer no_prefix = make_spm(/*add_space_prefix=*/false);
  EXPECT_EQ(no_prefix.encode("hello").front(), 260);  // "h": no ▁ prepended
  EXPECT_EQ(no_prefix.decode(no_prefix.encode(" hello")), " hello");
}

TEST(SentencePieceTest, RandomTextRoundTrips) {
  const Tokenizer t = make_spm();
  std::mt19937 rng(5);
  const std::vector<std::string> alphabet = {
      "h", "e", "l", "o", " ", "  ", "\xC3\xA9", "\xE4\xBD\xA0", "\xF0\x9F\x98\x80", "\n", "x"};
  for (int i = 0; i < 200; ++i) {
    std::string s;
    for (int k = std::uniform_int_distribution<int>(0, 20)(rng); k > 0; --k) {
      s += alphabet[std::uniform_int_distribution<size_t>(0, alphabet.size() - 1)(rng)];
    }
    ASSERT_EQ(t.decode(t.encode(s)), s) << "case " << i;
  }
}

TEST(SentencePieceTest, MissingScoresIsAnError) {
  TokenizerSpec spec;
  spec.kind = TokenizerKind::kSentencePieceBpe;
  spec.source = "x.gguf";
  spec.vocab = {"a", "b"};
  spec.scores = {0};
  absl::StatusOr<Tokenizer> t = Tokenizer::from_spec(spec);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("1 scores for 2 tokens"), std::string::npos);
}

}  // namespace
}  // namespace kiln
