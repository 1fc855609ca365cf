// tokenizer.json hardening: nesting limits on Sequences (a 50,000-deep one must neither overflow
// the stack nor build a huge error message) and the regular-file check on the files read.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "models/tokenizer.h"

namespace kiln {
namespace {

// A component `depth` Sequences deep around `leaf`.
std::string nested(const std::string& list_key, int depth, const std::string& leaf) {
  std::string s;
  s.reserve(depth * 48 + leaf.size());
  for (int i = 0; i < depth; ++i) s += R"({"type": "Sequence", ")" + list_key + R"(": [)";
  s += leaf;
  for (int i = 0; i < depth; ++i) s += "]}";
  return s;
}

constexpr const char* kByteLevel =
    R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true})";
constexpr const char* kModel =
    R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
constexpr const char* kSpmModel =
    R"({"type": "BPE", "byte_fallback": true, "vocab": {"a": 0}, "merges": []})";

std::string file(const std::string& model, const std::string& pre, const std::string& normalizer,
                 const std::string& decoder) {
  return R"({"model": )" + model + R"(, "pre_tokenizer": )" + pre + R"(, "normalizer": )" +
         normalizer + R"(, "decoder": )" + decoder + "}";
}

void expect_depth_error(const absl::StatusOr<Tokenizer>& t, const std::string& what) {
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find(what), std::string::npos) << t.status().message();
  EXPECT_NE(t.status().message().find("nested more than 64"), std::string::npos)
      << t.status().message();
  EXPECT_LT(t.status().message().size(), 400u);
}

TEST(TokenizerJsonHardeningTest, ShallowSequencesStillLoad) {
  // Nesting within the limit flattens to the same pre-tokenizer.
  absl::StatusOr<Tokenizer> t = Tokenizer::from_tokenizer_json_text(
      file(kModel, nested("pretokenizers", 10, kByteLevel), "null",
           nested("decoders", 3, R"({"type": "ByteLevel"})")),
      "", "t.json");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->pre_tokenizer(), PreTokenizerKind::kGpt2);
  EXPECT_EQ(t->encode("ab"), std::vector<int32_t>{2});
}

TEST(TokenizerJsonHardeningTest, DeepSequencesAreRefused) {
  constexpr int kDeep = 50000;
  expect_depth_error(
      Tokenizer::from_tokenizer_json_text(
          file(kModel, nested("pretokenizers", kDeep, kByteLevel), "null", "null"), "", "t.json"),
      "pre_tokenizer");
  expect_depth_error(
      Tokenizer::from_tokenizer_json_text(
          file(kModel, kByteLevel, nested("normalizers", kDeep, R"({"type": "NFC"})"), "null"), "",
          "t.json"),
      "normalizer");
  expect_depth_error(
      Tokenizer::from_tokenizer_json_text(
          file(kModel, kByteLevel, "null", nested("decoders", kDeep, R"({"type": "Fuse"})")), "",
          "t.json"),
      "decoder");
  expect_depth_error(Tokenizer::from_tokenizer_json_text(
                         file(kSpmModel, nested("pretokenizers", kDeep, R"({"type": "Metaspace"})"),
                              "null", "null"),
                         "", "t.json"),
                     "pre_tokenizer");
  // 65 levels: just past the limit.
  expect_depth_error(
      Tokenizer::from_tokenizer_json_text(
          file(kModel, nested("pretokenizers", 65, kByteLevel), "null", "null"), "", "t.json"),
      "pre_tokenizer");
}

TEST(TokenizerJsonHardeningTest, DeepUnknownComponentsGetAShortMessage) {
  // Not a Sequence but deeply nested JSON inside an unsupported component: the message must be
  // built without a recursive dump of the whole document.
  std::string deep = R"({"type": "Split", "pattern": )";
  for (int i = 0; i < 50000; ++i) deep += "[";
  for (int i = 0; i < 50000; ++i) deep += "]";
  deep += "}";
  absl::StatusOr<Tokenizer> t =
      Tokenizer::from_tokenizer_json_text(file(kModel, deep, "null", "null"), "", "t.json");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("nested too deep to show"), std::string::npos)
      << t.status().message().substr(0, 300);
  t = Tokenizer::from_tokenizer_json_text(file(kSpmModel, "null", deep, "null"), "", "t.json");
  ASSERT_FALSE(t.ok());
  EXPECT_LT(t.status().message().size(), 400u);
}

class TokenizerFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kiln_tokenizer_json_test_" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(TokenizerFileTest, DevZeroIsRefused) {
  absl::StatusOr<Tokenizer> t = Tokenizer::from_tokenizer_json("/dev/zero");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("not a regular file"), std::string::npos) << t.status();
}

TEST_F(TokenizerFileTest, FifoTokenizerJsonIsRefused) {
  const std::string path = (dir_ / "tokenizer.json").string();
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  // A plain open() of a FIFO waits for a writer forever: a regression hangs here (ctest's
  // timeout then fails it).
  absl::StatusOr<Tokenizer> t = Tokenizer::from_tokenizer_json(path);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("not a regular file"), std::string::npos) << t.status();
}

TEST_F(TokenizerFileTest, FifoTokenizerConfigIsRefused) {
  std::ofstream(dir_ / "tokenizer.json") << file(kModel, kByteLevel, "null", "null");
  ASSERT_TRUE(Tokenizer::from_tokenizer_json((dir_ / "tokenizer.json").string()).ok());
  const std::string config = (dir_ / "tokenizer_config.json").string();
  ASSERT_EQ(mkfifo(config.c_str(), 0600), 0);
  absl::StatusOr<Tokenizer> t = Tokenizer::from_tokenizer_json((dir_ / "tokenizer.json").string());
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("tokenizer_config.json: not a regular file"),
            std::string::npos)
      << t.status();
}

TEST_F(TokenizerFileTest, HugeFileIsRefusedBeforeReading) {
  // A sparse file: 1 GiB + 1 byte of size, no disk used.
  const std::string path = (dir_ / "tokenizer.json").string();
  std::ofstream(path).close();
  std::filesystem::resize_file(path, (std::uintmax_t{1} << 30) + 1);
  absl::StatusOr<Tokenizer> t = Tokenizer::from_tokenizer_json(path);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("too large for a tokenizer file"), std::string::npos)
      << t.status();
}

TEST_F(TokenizerFileTest, ChatTemplateJinjaFileBesideTheConfig) {
  const std::string tj = (dir_ / "tokenizer.json").string();
  std::ofstream(tj) << file(kModel, kByteLevel, "null", "null");
  std::ofstream(dir_ / "tokenizer_config.json") << R"({"bos_token": null})";
  std::ofstream(dir_ / "chat_template.jinja") << "{{ messages[0]['content'] }}";
  absl::StatusOr<Tokenizer> t = Tokenizer::from_tokenizer_json(tj);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->chat_template(), "{{ messages[0]['content'] }}");
  // The config's own template wins over the file.
  std::ofstream(dir_ / "tokenizer_config.json") << R"({"chat_template": "from config"})";
  t = Tokenizer::from_tokenizer_json(tj);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->chat_template(), "from config");
  // A FIFO in its place is refused like the other files.
  std::ofstream(dir_ / "tokenizer_config.json") << "{}";
  std::filesystem::remove(dir_ / "chat_template.jinja");
  ASSERT_EQ(mkfifo((dir_ / "chat_template.jinja").c_str(), 0600), 0);
  t = Tokenizer::from_tokenizer_json(tj);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("chat_template.jinja: not a regular file"), std::string::npos)
      << t.status();
}

TEST_F(TokenizerFileTest, DirectoryIsRefused) {
  absl::StatusOr<Tokenizer> t = Tokenizer::from_tokenizer_json(dir_.string());
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("not a regular file"), std::string::npos) << t.status();
}

}  // namespace
}  // namespace kiln
