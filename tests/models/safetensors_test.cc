// safetensors reader: valid files, sharded indexes, and every class of corruption.
#include "models/safetensors.h"
#include "tests/fixtures.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "models/weights.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), bytes.size());
}

// header JSON (padded with spaces to 8 bytes, as the format asks) + `data_bytes` bytes of data.
std::string build(std::string header, size_t data_bytes, bool pad = true) {
  if (pad) header.resize((header.size() + 7) / 8 * 8, ' ');
  std::string s(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(s.data(), &n, 8);
  s += header;
  for (size_t i = 0; i < data_bytes; ++i) s += static_cast<char>(i * 13 + 1);
  return s;
}

const char kValidHeader[] = R"({"__metadata__":{"format":"pt"},)"
                            R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                            R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},)"
                            R"("c":{"dtype":"F16","shape":[],"data_offsets":[32,34]}})";

class SafetensorsCorruption : public ::testing::Test {
 protected:
  std::string path_ = testing::unique_temp_path("kiln_st_test.safetensors");
  absl::Status open_bytes(const std::string& bytes) {
    write_file(path_, bytes);
    return SafetensorsFile::open(path_).status();
  }
  absl::Status open_header(const std::string& header, size_t data = 34) {
    return open_bytes(build(header, data));
  }
  void TearDown() override { std::remove(path_.c_str()); }
};

TEST_F(SafetensorsCorruption, ValidFileOpens) {
  write_file(path_, build(kValidHeader, 34));
  auto f = SafetensorsFile::open(path_);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 3u);
  const SafetensorsTensorInfo* b = (*f)->find_tensor("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, DType::kBF16);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(b->offset, 8 + (sizeof(kValidHeader) - 1 + 7) / 8 * 8 + 24);
  EXPECT_EQ((*f)->tensor_bytes(*b).size(), 8u);
  EXPECT_EQ((*f)->find_tensor("c")->shape.size(), 0u);
  EXPECT_EQ((*f)->find_tensor("__metadata__"), nullptr);
}

TEST_F(SafetensorsCorruption, HeaderErrors) {
  EXPECT_THAT(open_bytes("abc").message(), HasSubstr("too short"));
  std::string b = build(kValidHeader, 34);
  const uint64_t huge = b.size();  // header length past EOF
  std::memcpy(b.data(), &huge, 8);
  EXPECT_THAT(open_bytes(b).message(), HasSubstr("header length"));
  EXPECT_THAT(open_bytes(b).message(), HasSubstr("lies past the end of the file"));
  EXPECT_THAT(open_header("{\"a\":").message(), HasSubstr("not valid JSON"));
  EXPECT_THAT(open_header("[1,2]").message(), HasSubstr("not a JSON object"));
  EXPECT_THAT(open_header(R"({"a":5})").message(), HasSubstr("tensor 'a': entry is not an object"));
}

TEST_F(SafetensorsCorruption, TensorErrors) {
  EXPECT_THAT(open_header(R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})").message(),
              HasSubstr("tensor 'a': unsupported dtype 'I64'"));
  EXPECT_THAT(open_header(R"({"a":{"shape":[1],"data_offsets":[0,4]}})").message(),
              HasSubstr("'dtype'"));
  EXPECT_THAT(open_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})").message(),
              HasSubstr("does not match dtype F32 and shape [2]"));
  EXPECT_THAT(open_header(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})").message(),
              HasSubstr("not a non-negative integer"));
  EXPECT_THAT(
      open_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})")
          .message(),
      HasSubstr("overflows"));
  EXPECT_THAT(open_header(R"({"a":{"dtype":"F32","shape":[9],"data_offsets":[0,36]}})").message(),
              HasSubstr("tensor 'a' data [offsets 0..36] lies past the end of the data section"));
  EXPECT_THAT(open_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})").message(),
              HasSubstr("tensor 'a': data_offsets [8, 4] are reversed (begin after end)"));
  EXPECT_THAT(
      open_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551615,3]}})")
          .message(),
      HasSubstr("are reversed"));
  EXPECT_THAT(
      open_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}})")
          .message(),
      HasSubstr("lies past the end"));
  EXPECT_THAT(open_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})").message(),
              HasSubstr("'data_offsets' is not a pair"));
  EXPECT_THAT(open_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})")
                  .message(),
              HasSubstr("duplicate tensor 'a'"));
}

// Each of these loaded on main and only produced wrong numbers later.
TEST_F(SafetensorsCorruption, OverlapMisalignmentAndDtypeMismatchAreRefused) {
  EXPECT_THAT(open_header(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                          R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})")
                  .message(),
              HasSubstr("tensors 'a' [offsets 0..16] and 'b' [offsets 8..24] overlap"));
  // Identical ranges (one tensor's bytes read as two weights) overlap too.
  EXPECT_THAT(open_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}})")
                  .message(),
              HasSubstr("overlap"));
  // Adjacent and empty tensors do not.
  EXPECT_TRUE(open_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})")
                  .ok());
  EXPECT_THAT(open_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[2,10]}})").message(),
              HasSubstr("tensor 'a': data offset 2 is not a multiple of its F32 element size 4"));
  EXPECT_THAT(open_header(R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,8]}})").message(),
              HasSubstr("data size 8 bytes does not match dtype BF16 and shape [2]"));
  // A header whose length leaves the data at an odd byte.
  const std::string unpadded = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  ASSERT_NE(unpadded.size() % 8, 0u);
  EXPECT_THAT(open_bytes(build(unpadded, 4, /*pad=*/false)).message(),
              HasSubstr("leaves the tensor data at byte"));
}

TEST_F(SafetensorsCorruption, JsonErrorsSayWhere) {
  EXPECT_THAT(open_header("{\"a\": {\"dtype\" 5}}").message(),
              HasSubstr(": header: not valid JSON at line 1, column 16 (byte 15)"));
}

TEST_F(SafetensorsCorruption, EveryTruncationFails) {
  const std::string full = build(kValidHeader, 34);
  for (size_t len = 0; len < full.size(); ++len) {
    absl::Status s = open_bytes(full.substr(0, len));
    ASSERT_FALSE(s.ok()) << "truncated to " << len;
    EXPECT_THAT(s.message(), HasSubstr(path_));
  }
}

TEST_F(SafetensorsCorruption, FuzzFlipsAndTruncations) {
  const std::string full = build(kValidHeader, 34);
  std::mt19937_64 rng(777);
  for (int iter = 0; iter < 3000; ++iter) {
    std::string bytes = full;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) {
      const size_t pos = rng() % bytes.size();
      // Digits and JSON punctuation make the parser go further than random bytes would.
      static constexpr char kChars[] = "0123456789\"{}[],:-eE.\\ \xff";
      bytes[pos] = rng() % 2 ? kChars[rng() % (sizeof(kChars) - 1)] : static_cast<char>(rng());
    }
    if (rng() % 4 == 0) bytes.resize(rng() % bytes.size());
    absl::Status s = open_bytes(bytes);
    if (!s.ok()) {
      EXPECT_THAT(s.message(), HasSubstr(path_));
    }
  }
}

// Sharded checkpoints: every way an index and its shards can disagree.
class ShardedIndex : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::unique_temp_path("kiln_sharded_test");
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    write_file(
        dir_ + "/s1.safetensors",
        build(R"({"model.norm.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8));
    write_file(
        dir_ + "/s2.safetensors",
        build(R"({"lm_head.weight":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}})", 8));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write_index(const std::string& weight_map) {
    write_file(dir_ + "/model.safetensors.index.json",
               R"({"metadata":{},"weight_map":)" + weight_map + "}");
  }
  std::string dir_;
};

TEST_F(ShardedIndex, ValidIndexLoads) {
  write_index(R"({"model.norm.weight":"s1.safetensors","lm_head.weight":"s2.safetensors"})");
  auto w = load_safetensors_weights(dir_);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->all().size(), 2u);
  EXPECT_THAT(w->find("lm_head")->source_file, HasSubstr("s2.safetensors"));
}

TEST_F(ShardedIndex, TensorMissingFromItsShard) {
  write_index(R"({"model.norm.weight":"s1.safetensors","lm_head.weight":"s2.safetensors",)"
              R"("model.embed_tokens.weight":"s2.safetensors"})");
  auto w = load_safetensors_weights(dir_);
  EXPECT_THAT(w.status().message(), HasSubstr("tensor 'model.embed_tokens.weight' is listed in"));
  EXPECT_THAT(w.status().message(), HasSubstr("absent from this shard"));
}

TEST_F(ShardedIndex, TensorInTwoShards) {
  write_file(dir_ + "/s3.safetensors",
             build(R"({"model.norm.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8));
  write_index(R"({"model.norm.weight":"s1.safetensors","lm_head.weight":"s3.safetensors"})");
  EXPECT_THAT(load_safetensors_weights(dir_).status().message(),
              HasSubstr("duplicate tensor 'model.norm.weight'"));
}

TEST_F(ShardedIndex, MissingOrBadShard) {
  write_index(R"({"model.norm.weight":"nope.safetensors"})");
  EXPECT_THAT(load_safetensors_weights(dir_).status().message(),
              HasSubstr("nope.safetensors: cannot open"));
  write_index(R"({"model.norm.weight":"../s1.safetensors"})");
  EXPECT_THAT(load_safetensors_weights(dir_).status().message(),
              HasSubstr("not a plain file name"));
  write_index(R"({"model.norm.weight":3})");
  EXPECT_THAT(load_safetensors_weights(dir_).status().message(), HasSubstr("is not a string"));
  write_file(dir_ + "/s2.safetensors", "garbage!garbage!");
  write_index(R"({"model.norm.weight":"s1.safetensors","lm_head.weight":"s2.safetensors"})");
  EXPECT_THAT(load_safetensors_weights(dir_).status().message(), HasSubstr("s2.safetensors"));
}

TEST(SafetensorsMissing, NoFileIsNotFound) {
  auto w = load_safetensors_weights("/nonexistent/kiln/model");
  EXPECT_EQ(w.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(w.status().message(), HasSubstr("/nonexistent/kiln/model/model.safetensors"));
}

}  // namespace
}  // namespace kiln
