// Tokenizer tests on SmolLM2's vocabulary (tokenizer.json) against llama.cpp's golden ids.
//
// Needs ${KILN_CACHE:-~/.cache/kiln}/fixtures/smollm2-tokenizer/tokenizer.json, made by
// `python3 scripts/make_tokenizer_golden.py`; the tests that need it skip (saying so) without it.
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "models/tokenizer.h"
#include "models/unicode.h"
#include "nlohmann/json.hpp"

namespace kiln {
namespace {

using json = nlohmann::json;

std::filesystem::path cache_dir() {
  if (const char* c = std::getenv("KILN_CACHE"); c && *c) return c;
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home ? home : "/root") / ".cache" / "kiln";
}

std::string read(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct GoldenCase {
  std::string text;
  std::vector<int32_t> ids;
};

std::vector<GoldenCase> load_goldens() {
  const json g = json::parse(
      read(std::filesystem::path(KILN_SOURCE_DIR) / "tests/models/testdata/smollm2_golden.json"));
  std::vector<GoldenCase> out;
  for (const json& c : g["cases"]) out.push_back({c["text"], c["ids"]});
  return out;
}

// True when every byte of `s` has a byte-level token. SmolLM2's vocabulary lacks 21 bytes
// (0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1, 0xF2, 0xF5..0xFF), so code points that
// need them (U+40000..U+BFFFF, some controls) cannot round-trip: HF and llama.cpp drop them too.
bool representable(const Tokenizer& t, std::string_view s) {
  for (char c : s) {
    std::string ch;
    unicode::append_utf8(unicode::byte_to_unicode(static_cast<uint8_t>(c)), ch);
    if (!t.token_id(ch)) return false;
  }
  return true;
}

class SmolLm2TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto path = cache_dir() / "fixtures/smollm2-tokenizer/tokenizer.json";
    if (!std::filesystem::exists(path)) return;
    absl::StatusOr<Tokenizer> t = Tokenizer::from_tokenizer_json(path.string());
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = new Tokenizer(std::move(*t));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  void SetUp() override {
    if (tokenizer_ == nullptr) {
      GTEST_SKIP() << "SmolLM2 tokenizer.json not in the cache; run "
                      "`python3 scripts/make_tokenizer_golden.py` first";
    }
  }
  static Tokenizer* tokenizer_;
};
Tokenizer* SmolLm2TokenizerTest::tokenizer_ = nullptr;

std::string show_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += std::to_string(id) + " ";
  return s;
}

TEST_F(SmolLm2TokenizerTest, MatchesLlamaCppGoldenIds) {
  const std::vector<GoldenCase> cases = load_goldens();
  ASSERT_GT(cases.size(), 40u);
  for (const GoldenCase& c : cases) {
    EXPECT_EQ(show_ids(tokenizer_->encode(c.text)), show_ids(c.ids)) << "text: " << c.text;
  }
}

TEST_F(SmolLm2TokenizerTest, Metadata) {
  EXPECT_EQ(tokenizer_->vocab_size(), 49152);
  EXPECT_EQ(tokenizer_->pre_tokenizer(), PreTokenizerKind::kSmolLm);
  EXPECT_EQ(tokenizer_->bos_id(), 1);  // <|im_start|> (from tokenizer_config.json)
  EXPECT_EQ(tokenizer_->eos_id(), 2);  // <|im_end|>
  EXPECT_EQ(tokenizer_->token_text(1), "<|im_start|>");
  EXPECT_EQ(tokenizer_->token_text(-1), "");
  EXPECT_EQ(tokenizer_->token_text(1 << 30), "");
  EXPECT_EQ(tokenizer_->stop_ids(), (std::vector<int32_t>{2, 0}));  // <|im_end|>, <|endoftext|>
  EXPECT_NE(tokenizer_->chat_template().find("<|im_start|>"), std::string::npos);
}

TEST_F(SmolLm2TokenizerTest, DecodeInvertsEncodeOnGoldenTexts) {
  for (const GoldenCase& c : load_goldens()) {
    if (!representable(*tokenizer_, c.text)) continue;  // the case of dropped bytes
    EXPECT_EQ(tokenizer_->decode(tokenizer_->encode(c.text)), c.text);
    EXPECT_EQ(tokenizer_->decode(c.ids), c.text);
  }
}

// Random valid UTF-8 the vocabulary can represent: code points from every encoding length,
// weighted towards the classes the pre-tokenizer distinguishes.
std::string random_utf8(std::mt19937& rng, const Tokenizer& t) {
  static const char32_t kPicks[] = {U' ', U'\n', U'\t',     U'\'',     U's',
                                    U'7', U'.',  U'\u00a0', U'\u0301', U'\u3000'};
  std::uniform_int_distribution<int> len(0, 40), kind(0, 5);
  std::string s;
  const int n = len(rng);
  for (int i = 0; i < n; ++i) {
    char32_t cp;
    switch (kind(rng)) {
      case 0: cp = std::uniform_int_distribution<char32_t>(0x01, 0x7F)(rng); break;
      case 1: cp = std::uniform_int_distribution<char32_t>(0x80, 0x7FF)(rng); break;
      case 2: cp = std::uniform_int_distribution<char32_t>(0x800, 0xD7FF)(rng); break;
      case 3: cp = std::uniform_int_distribution<char32_t>(0xE000, 0xFFFD)(rng); break;
      case 4: cp = std::uniform_int_distribution<char32_t>(0x10000, 0x10FFFF)(rng); break;
      default: cp = kPicks[std::uniform_int_distribution<int>(0, 9)(rng)];
    }
    std::string ch;
    unicode::append_utf8(cp, ch);
    if (representable(t, ch)) s += ch;
  }
  return s;
}

TEST_F(SmolLm2TokenizerTest, DecodeInvertsEncodeOnRandomUtf8) {
  std::mt19937 rng(20240607);
  for (int i = 0; i < 300; ++i) {
    const std::string s = random_utf8(rng, *tokenizer_);
    ASSERT_EQ(tokenizer_->decode(tokenizer_->encode(s)), s) << "case " << i;
  }
}

TEST_F(SmolLm2TokenizerTest, ArbitraryBytesEncodeAndRoundTrip) {
  std::mt19937 rng(7);
  for (int i = 0; i < 100; ++i) {
    std::string s(std::uniform_int_distribution<int>(0, 30)(rng), '\0');
    for (char& c : s) {
      do {
        c = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(rng));
      } while (!representable(*tokenizer_, std::string_view(&c, 1)));
    }
    ASSERT_EQ(tokenizer_->decode(tokenizer_->encode(s)), s) << "case " << i;
  }
}

// Pushes `ids` one at a time; every chunk must be valid UTF-8.
std::string stream(const Tokenizer& t, const std::vector<int32_t>& ids) {
  Tokenizer::StreamDecoder dec(t);
  std::string all;
  for (int32_t id : ids) {
    const std::string chunk = dec.push(id);
    EXPECT_TRUE(unicode::is_valid_utf8(chunk)) << "chunk after id " << id;
    all += chunk;
  }
  const std::string tail = dec.flush();
  EXPECT_TRUE(unicode::is_valid_utf8(tail));
  return all + tail;
}

TEST_F(SmolLm2TokenizerTest, StreamDecoderMatchesDecode) {
  for (const GoldenCase& c : load_goldens()) {
    const std::string all = tokenizer_->decode(c.ids);
    const std::string streamed = stream(*tokenizer_, c.ids);  // checks every chunk's validity
    // Dropped lead bytes leave invalid UTF-8, which the stream replaces with U+FFFD.
    if (unicode::is_valid_utf8(all)) EXPECT_EQ(streamed, all) << c.text;
  }
  std::mt19937 rng(99);
  for (int i = 0; i < 100; ++i) {
    const std::vector<int32_t> ids = tokenizer_->encode(random_utf8(rng, *tokenizer_));
    EXPECT_EQ(stream(*tokenizer_, ids), tokenizer_->decode(ids));
  }
}

TEST_F(SmolLm2TokenizerTest, StreamDecoderEmitsAsSoonAsComplete) {
  // "😀" is four byte-level tokens or fewer; nothing comes out before the last byte arrives.
  const std::vector<int32_t> ids = tokenizer_->encode("a😀");
  Tokenizer::StreamDecoder dec(*tokenizer_);
  EXPECT_EQ(dec.push(ids[0]), "a");
  std::string got;
  for (size_t i = 1; i < ids.size(); ++i) {
    const std::string chunk = dec.push(ids[i]);
    if (i + 1 < ids.size()) EXPECT_EQ(chunk, "");
    got += chunk;
  }
  EXPECT_EQ(got, "😀");
  EXPECT_EQ(dec.flush(), "");
}

TEST_F(SmolLm2TokenizerTest, StreamDecoderReplacesNeverValidBytes) {
  // A lone continuation byte (the byte-level token for 0x80) can never become valid.
  const std::vector<int32_t> ids = tokenizer_->encode("\x80x");
  std::string all = stream(*tokenizer_, ids);
  EXPECT_EQ(all, "\xEF\xBF\xBDx");
  // A truncated sequence left at the end is flushed as U+FFFD.
  Tokenizer::StreamDecoder dec(*tokenizer_);
  std::string s;
  for (int32_t id : tokenizer_->encode("\xe4\xbd")) s += dec.push(id);
  EXPECT_EQ(s, "");
  EXPECT_EQ(dec.flush(), "\xEF\xBF\xBD");
}

TEST_F(SmolLm2TokenizerTest, BytesMissingFromTheVocabAreDropped) {
  EXPECT_EQ(tokenizer_->decode(tokenizer_->encode("a\x04"
                                                  "b")),
            "ab");
}

TEST_F(SmolLm2TokenizerTest, SpecialTokens) {
  const std::string text = "<|im_start|>user\nHi<|im_end|>";
  const std::vector<int32_t> with = tokenizer_->encode(text, /*parse_special=*/true);
  ASSERT_GE(with.size(), 3u);
  EXPECT_EQ(with.front(), 1);
  EXPECT_EQ(with.back(), 2);
  const std::vector<int32_t> without = tokenizer_->encode(text, /*parse_special=*/false);
  EXPECT_EQ(std::count(without.begin(), without.end(), 1), 0);
  EXPECT_EQ(std::count(without.begin(), without.end(), 2), 0);
  EXPECT_EQ(tokenizer_->decode(without), text);
  EXPECT_EQ(tokenizer_->decode(with, /*skip_special=*/true), "user\nHi");
  EXPECT_TRUE(tokenizer_->is_special(1));
  EXPECT_FALSE(tokenizer_->is_special(with[1]));
  EXPECT_EQ(tokenizer_->encode("x", true, /*add_bos=*/true).front(), 1);
}

TEST_F(SmolLm2TokenizerTest, EncodesTenKilobytesInMilliseconds) {
  std::string text;
  for (const GoldenCase& c : load_goldens()) text += c.text + "\n";
  while (text.size() < 10 * 1024) text += text;
  text.resize(10 * 1024);
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tokenizer_->encode(text);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GT(ids.size(), 1000u);
  // Milliseconds in a release build; the bound leaves room for sanitizers and a busy machine.
  EXPECT_LT(ms, 500.0) << "10 KB took " << ms << " ms";
  std::printf("encode 10 KB: %.2f ms, %zu tokens\n", ms, ids.size());
  // A single giant pre-token (no spaces) must not be quadratic.
  const std::string word(20000, 'a');
  const auto start2 = std::chrono::steady_clock::now();
  EXPECT_EQ(tokenizer_->decode(tokenizer_->encode(word)), word);
  const double ms2 =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start2).count();
  EXPECT_LT(ms2, 1000.0);
}

// --- loader errors (small hand-written tokenizer.json files; no cache needed) ---

absl::Status load_error(const std::string& tokenizer_json, const std::string& config = "") {
  absl::StatusOr<Tokenizer> t =
      Tokenizer::from_tokenizer_json_text(tokenizer_json, config, "t.json");
  return t.status();
}

constexpr const char* kByteLevel =
    R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true})";

std::string tiny_json(const std::string& model, const std::string& pre = kByteLevel) {
  return R"({"added_tokens": [{"id": 3, "content": "<s>", "special": true}], "pre_tokenizer": )" +
         pre + R"(, "model": )" + model + "}";
}

const char* kTinyModel =
    R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";

TEST(TokenizerJsonTest, TinyTokenizerWorks) {
  absl::StatusOr<Tokenizer> t = Tokenizer::from_tokenizer_json_text(
      tiny_json(kTinyModel), R"({"bos_token": "<s>", "add_bos_token": true})", "t.json");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->encode("abab<s>a"), (std::vector<int32_t>{2, 2, 3, 0}));
  EXPECT_EQ(t->bos_id(), 3);
  EXPECT_TRUE(t->add_bos());
  EXPECT_EQ(t->encode("ab", true, true), (std::vector<int32_t>{3, 2}));
  // Array-form merges (tokenizers >= 0.20) load the same way.
  absl::StatusOr<Tokenizer> t2 = Tokenizer::from_tokenizer_json_text(
      tiny_json(R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]})"),
      "", "t.json");
  ASSERT_TRUE(t2.ok()) << t2.status();
  EXPECT_EQ(t2->encode("ab"), (std::vector<int32_t>{2}));
}

void expect_error(const absl::Status& s, const std::string& fragment) {
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(fragment), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("t.json"), std::string::npos) << s.message();
}

TEST(TokenizerJsonTest, MalformedFilesGiveClearErrors) {
  expect_error(load_error("{not json"), "not a valid JSON object");
  expect_error(load_error(R"({"pre_tokenizer": null})"), "missing object 'model'");
  expect_error(load_error(tiny_json(R"({"type": "WordPiece", "vocab": {}})")),
               "unknown model type 'WordPiece'");
  expect_error(load_error(tiny_json(
                   R"({"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b", "ab", 3]})")),
               "model.merges[1] is not a pair");
  expect_error(load_error(tiny_json(
                   R"({"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b", "c"]]})")),
               "model.merges[0] is not a pair");
  expect_error(load_error(tiny_json(R"({"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]})")),
               "merges[0] ('a' 'b') uses a token that is not in the vocabulary");
  expect_error(load_error(tiny_json(kTinyModel, R"({"type": "Whitespace"})")),
               "unknown pre_tokenizer {\"type\":\"Whitespace\"}");
  expect_error(load_error(tiny_json(kTinyModel, "null")), "no pre_tokenizer");
  expect_error(load_error(tiny_json(R"({"type": "BPE", "vocab": [1], "merges": []})")),
               "missing object 'model.vocab'");
  expect_error(load_error(tiny_json(R"({"type": "BPE", "vocab": {"a": "x"}, "merges": []})")),
               "model.vocab['a'] has a non-integer id");
  expect_error(load_error(tiny_json(R"({"type": "BPE", "vocab": {"a": -4}, "merges": []})")),
               "outside");
  expect_error(load_error(tiny_json(R"({"type": "BPE", "vocab": {"a": 0}})")),
               "missing array 'model.merges'");
  // SentencePiece-style BPE takes no byte-level pre-tokenizer.
  expect_error(load_error(tiny_json(
                   R"({"type": "BPE", "byte_fallback": true, "vocab": {"a": 0}, "merges": []})")),
               "is not supported for SentencePiece-style BPE (byte_fallback)");
  expect_error(load_error(tiny_json(kTinyModel), "[1, 2]"), "tokenizer_config.json");
  expect_error(load_error(R"({"model": )" + std::string(kTinyModel) + R"(, "pre_tokenizer": )" +
                          kByteLevel + R"(, "added_tokens": [{"id": "x"}]})"),
               "added_tokens[0]");
}

TEST(TokenizerJsonTest, MissingFileIsNotFound) {
  absl::StatusOr<Tokenizer> t = Tokenizer::from_tokenizer_json("/nonexistent/tokenizer.json");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
}

TEST(TokenizerSpecTest, RejectsInconsistentSpecs) {
  TokenizerSpec spec;
  spec.source = "spec";
  EXPECT_FALSE(Tokenizer::from_spec(spec).ok());  // empty vocab
  spec.vocab = {"a", "b"};
  spec.eos_id = 5;
  EXPECT_NE(Tokenizer::from_spec(spec).status().message().find("eos token id 5 is outside"),
            std::string::npos);
  spec.eos_id = 1;
  spec.types = {TokenType::kNormal};
  EXPECT_NE(Tokenizer::from_spec(spec).status().message().find("1 token types for 2 tokens"),
            std::string::npos);
}

}  // namespace
}  // namespace kiln
