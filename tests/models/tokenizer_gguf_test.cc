// Tokenizer::from_gguf on the real SmolLM2 GGUF: the same llama.cpp goldens as tokenizer_test.
//
// Needs ${KILN_CACHE:-~/.cache/kiln}/models/SmolLM2-135M-Instruct.Q4_1.gguf (skips without it) and
// models/gguf.cc (GgufFile), which lands from another branch.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "models/chat_template.h"
#include "models/gguf.h"
#include "models/tokenizer.h"
#include "nlohmann/json.hpp"

namespace kiln {
namespace {

std::filesystem::path model_path() {
  std::filesystem::path cache;
  if (const char* c = std::getenv("KILN_CACHE"); c && *c) {
    cache = c;
  } else {
    const char* home = std::getenv("HOME");
    cache = std::filesystem::path(home ? home : "/root") / ".cache" / "kiln";
  }
  return cache / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
}

class SmolLm2GgufTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(model_path())) {
      GTEST_SKIP() << model_path() << " not found (python3 scripts/make_tokenizer_golden.py links "
                   << "it from ~/.cache/kiln/dl/smollm2.gguf)";
    }
    absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::open(model_path().string());
    ASSERT_TRUE(gguf.ok()) << gguf.status();
    absl::StatusOr<Tokenizer> t = Tokenizer::from_gguf(**gguf);
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = std::make_unique<Tokenizer>(std::move(*t));
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(SmolLm2GgufTokenizerTest, MatchesLlamaCppGoldenIds) {
  std::ifstream in(std::filesystem::path(KILN_SOURCE_DIR) /
                   "tests/models/testdata/smollm2_golden.json");
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json g = nlohmann::json::parse(ss.str());
  ASSERT_GT(g["cases"].size(), 40u);
  for (const nlohmann::json& c : g["cases"]) {
    const std::string text = c["text"];
    const std::vector<int32_t> ids = c["ids"];
    EXPECT_EQ(tokenizer_->encode(text), ids) << "text: " << text;
    Tokenizer::StreamDecoder dec(*tokenizer_);
    std::string streamed;
    for (int32_t id : ids) streamed += dec.push(id);
    streamed += dec.flush();
    if (tokenizer_->decode(ids) == text) EXPECT_EQ(streamed, text);
  }
}

TEST_F(SmolLm2GgufTokenizerTest, Metadata) {
  EXPECT_EQ(tokenizer_->kind(), TokenizerKind::kByteLevelBpe);
  EXPECT_EQ(tokenizer_->pre_tokenizer(), PreTokenizerKind::kSmolLm);
  EXPECT_EQ(tokenizer_->vocab_size(), 49152);
  EXPECT_EQ(tokenizer_->bos_id(), 1);
  EXPECT_EQ(tokenizer_->eos_id(), 2);
  EXPECT_FALSE(tokenizer_->add_bos());
  EXPECT_EQ(tokenizer_->stop_ids(), (std::vector<int32_t>{2, 0}));
  absl::StatusOr<ChatTemplate> t = ChatTemplate::for_tokenizer(*tokenizer_);
  ASSERT_TRUE(t.ok()) << t.status();
  // The GGUF's own template: SmolLM2's default system prompt appears without a system message.
  absl::StatusOr<std::string> prompt = t->render({{"user", "Hi"}}, true);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_EQ(*prompt,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t->stop_ids(*tokenizer_), (std::vector<int32_t>{2, 0}));
  const std::vector<int32_t> ids = tokenizer_->encode(*prompt);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 198);  // "\n" after "<|im_start|>assistant"
}

}  // namespace
}  // namespace kiln
