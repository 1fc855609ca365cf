// GGUF reader: metadata and tensor directory of real fixtures, and every class of corruption.
#include "models/gguf.h"
#include "tests/fixtures.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>

namespace kiln {
namespace {

using ::testing::HasSubstr;

std::string fixtures() {
  const char* d = std::getenv("KILN_FIXTURES");
  return d ? d : "";
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), bytes.size());
}

// Builds GGUF bytes field by field so each test can break exactly one thing.
struct Bytes {
  std::string s;
  Bytes& u8(uint8_t v) { return raw(&v, 1); }
  Bytes& u32(uint32_t v) { return raw(&v, 4); }
  Bytes& u64(uint64_t v) { return raw(&v, 8); }
  Bytes& f32(float v) { return raw(&v, 4); }
  Bytes& str(const std::string& v) {
    u64(v.size());
    s += v;
    return *this;
  }
  Bytes& raw(const void* p, size_t n) {
    s.append(static_cast<const char*>(p), n);
    return *this;
  }
};

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type;
  uint64_t offset;
};

struct GgufSpec {
  uint32_t version = 3;
  std::string magic = "GGUF";
  std::vector<std::string> kvs;  // encoded key/type/value entries
  std::vector<TensorSpec> tensors;
  uint64_t data_bytes = 0;
  std::optional<uint64_t> n_tensors, n_kv;
};

std::string kv_string(const std::string& k, const std::string& v) {
  return Bytes().str(k).u32(8).str(v).s;
}
std::string kv_u32(const std::string& k, uint32_t v) { return Bytes().str(k).u32(4).u32(v).s; }

// The valid reference file: two tensors (F32 [2, 32] and Q8_0 [32]) and varied metadata,
// including a nested array.
GgufSpec valid_spec() {
  GgufSpec g;
  g.kvs.push_back(kv_string("general.architecture", "llama"));
  g.kvs.push_back(kv_u32("general.alignment", 32));
  g.kvs.push_back(Bytes().str("test.f32").u32(6).f32(1.5f).s);
  g.kvs.push_back(Bytes().str("test.bool").u32(7).u8(1).s);
  g.kvs.push_back(Bytes().str("test.strings").u32(9).u32(8).u64(2).str("ab").str("c").s);
  // array of 2 arrays of 2 int32
  g.kvs.push_back(Bytes()
                      .str("test.nested")
                      .u32(9)
                      .u32(9)
                      .u64(2)
                      .u32(5)
                      .u64(2)
                      .u32(1)
                      .u32(2)
                      .u32(5)
                      .u64(2)
                      .u32(3)
                      .u32(4)
                      .s);
  g.tensors.push_back({"a", {32, 2}, 0, 0});
  g.tensors.push_back({"b", {32}, 8, 256});
  g.data_bytes = 256 + 34;
  return g;
}

std::string build(const GgufSpec& g) {
  Bytes b;
  b.raw(g.magic.data(), g.magic.size()).u32(g.version);
  b.u64(g.n_tensors.value_or(g.tensors.size())).u64(g.n_kv.value_or(g.kvs.size()));
  for (const std::string& kv : g.kvs) b.s += kv;
  for (const TensorSpec& t : g.tensors) {
    b.str(t.name).u32(t.ne.size());
    for (uint64_t d : t.ne) b.u64(d);
    b.u32(t.type).u64(t.offset);
  }
  b.s.resize((b.s.size() + 31) / 32 * 32, '\0');
  for (uint64_t i = 0; i < g.data_bytes; ++i) b.u8(static_cast<uint8_t>(i * 7 + 3));
  return b.s;
}

class GgufCorruption : public ::testing::Test {
 protected:
  std::string path_ = testing::unique_temp_path("kiln_gguf_test.gguf");
  absl::Status open_bytes(const std::string& bytes) {
    write_file(path_, bytes);
    return GgufFile::open(path_).status();
  }
  absl::Status open_spec(const GgufSpec& g) { return open_bytes(build(g)); }
  void TearDown() override { std::remove(path_.c_str()); }
};

TEST_F(GgufCorruption, ValidReferenceFileOpens) {
  write_file(path_, build(valid_spec()));
  auto g = GgufFile::open(path_);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ((*g)->version(), 3u);
  EXPECT_EQ(*(*g)->get_string("general.architecture"), "llama");
  EXPECT_EQ(*(*g)->get_int("general.alignment"), 32);
  EXPECT_EQ(*(*g)->get_float("test.f32"), 1.5);
  EXPECT_EQ(*(*g)->get_float("general.alignment"), 32.0);  // integers widen to float
  EXPECT_TRUE(*(*g)->get_bool("test.bool"));
  EXPECT_THAT(*(*g)->get_string_array("test.strings"), ::testing::ElementsAre("ab", "c"));
  const auto& nested = std::get<GgufValue::Array>((*g)->metadata().at("test.nested").value);
  ASSERT_EQ(nested.size(), 2u);
  EXPECT_EQ(std::get<int64_t>(std::get<GgufValue::Array>(nested[1].value)[0].value), 3);
  ASSERT_EQ((*g)->tensors().size(), 2u);
  const GgufTensorInfo* a = (*g)->find_tensor("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 32}));  // ne reversed: outermost first
  EXPECT_EQ(a->size, 256u);
  const GgufTensorInfo* b = (*g)->find_tensor("b");
  EXPECT_EQ(b->dtype, DType::kQ8_0);
  EXPECT_EQ(b->size, 34u);
  EXPECT_EQ(b->offset - a->offset, 256u);
  EXPECT_EQ((*g)->tensor_bytes(*b).size(), 34u);
  EXPECT_EQ((*g)->find_tensor("c"), nullptr);
  // Typed lookups fail clearly.
  EXPECT_THAT((*g)->get_int("general.architecture").status().message(),
              HasSubstr("'general.architecture' is a string, expected an integer"));
  EXPECT_EQ((*g)->get_int("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE((*g)->get_string_array("test.nested").ok());
}

TEST_F(GgufCorruption, VersionTwoOpens) {
  GgufSpec g = valid_spec();
  g.version = 2;
  EXPECT_TRUE(open_spec(g).ok());
}

TEST_F(GgufCorruption, BadMagicAndVersion) {
  GgufSpec g = valid_spec();
  g.magic = "GGUG";
  EXPECT_THAT(open_spec(g).message(), HasSubstr("bad magic"));
  g = valid_spec();
  g.version = 1;
  EXPECT_THAT(open_spec(g).message(), HasSubstr("unsupported GGUF version 1"));
  g.version = 4;
  EXPECT_THAT(open_spec(g).message(), HasSubstr("unsupported GGUF version 4"));
  EXPECT_THAT(open_bytes("").message(), HasSubstr("magic"));
}

TEST_F(GgufCorruption, MetadataErrors) {
  GgufSpec g = valid_spec();
  g.kvs.push_back(Bytes().str("bad.type").u32(13).u32(0).s);
  EXPECT_THAT(open_spec(g).message(), HasSubstr("'bad.type': invalid metadata type code 13"));

  g = valid_spec();
  g.kvs.push_back(Bytes().str("bad.array").u32(9).u32(42).u64(1).u32(0).s);
  EXPECT_THAT(open_spec(g).message(), HasSubstr("invalid array element type code 42"));

  g = valid_spec();
  g.kvs.push_back(kv_u32("general.alignment", 64));
  EXPECT_THAT(open_spec(g).message(), HasSubstr("duplicate metadata key 'general.alignment'"));

  g = valid_spec();
  g.kvs.push_back(Bytes().str("long.string").u32(8).u64(1ull << 40).s);
  EXPECT_THAT(open_spec(g).message(), HasSubstr("string length 1099511627776 lies past the end"));

  g = valid_spec();
  g.kvs.push_back(Bytes().str("big.array").u32(9).u32(10).u64(~0ull / 2).s);
  EXPECT_THAT(open_spec(g).message(), HasSubstr("cannot fit in the"));

  g = valid_spec();
  g.kvs.push_back(Bytes().str("bad.bool").u32(7).u8(7).s);
  EXPECT_THAT(open_spec(g).message(), HasSubstr("invalid bool"));

  g = valid_spec();
  g.kvs[1] = kv_u32("general.alignment", 24);
  EXPECT_THAT(open_spec(g).message(), HasSubstr("power of two"));

  g = valid_spec();
  g.n_kv = 1ull << 60;
  EXPECT_THAT(open_spec(g).message(), HasSubstr("metadata_kv_count"));
  g = valid_spec();
  g.n_tensors = 1ull << 60;
  EXPECT_THAT(open_spec(g).message(), HasSubstr("tensor_count"));

  // Arrays nested deeper than any real file.
  g = valid_spec();
  Bytes deep;
  deep.str("deep");
  deep.u32(9);
  for (int i = 0; i < 64; ++i) deep.u32(9).u64(1);
  deep.u32(0).u64(0);
  g.kvs.push_back(deep.s);
  EXPECT_THAT(open_spec(g).message(), HasSubstr("nested"));
}

TEST_F(GgufCorruption, TensorErrors) {
  GgufSpec g = valid_spec();
  g.tensors.push_back({"a", {32}, 0, 320});
  g.data_bytes += 128;
  EXPECT_THAT(open_spec(g).message(), HasSubstr("duplicate tensor name 'a'"));

  g = valid_spec();
  g.tensors[1].type = 6;  // Q5_0
  EXPECT_THAT(open_spec(g).message(), HasSubstr("tensor 'b': unsupported tensor type code 6"));

  g = valid_spec();
  g.tensors[1].ne = {16};  // not a whole Q8_0 block
  EXPECT_THAT(open_spec(g).message(), HasSubstr("not a multiple of the q8_0 block size 32"));

  g = valid_spec();
  g.tensors[0].ne = {32, 1, 1, 1, 1};
  EXPECT_THAT(open_spec(g).message(), HasSubstr("tensor 'a': n_dims 5"));

  g = valid_spec();
  g.tensors[0].ne = {32, 0};
  EXPECT_THAT(open_spec(g).message(), HasSubstr("tensor 'a': dimension ne[1] = 0"));

  g = valid_spec();
  g.tensors[0].ne = {1ull << 32, 1ull << 32};  // element count overflows int64
  EXPECT_THAT(open_spec(g).message(), HasSubstr("overflow"));

  g = valid_spec();
  g.tensors[1].offset = 288;
  EXPECT_THAT(open_spec(g).message(),
              HasSubstr("tensor 'b' data [offset 288, size 34] lies past the end of the file"));

  g = valid_spec();
  g.tensors[1].offset = ~0ull - 31;  // offset + size would wrap around
  EXPECT_THAT(open_spec(g).message(), HasSubstr("lies past the end of the file"));

  g = valid_spec();
  g.tensors[1].offset = 260;
  EXPECT_THAT(open_spec(g).message(), HasSubstr("not a multiple of the alignment 32"));

  g = valid_spec();
  g.tensors[0].name = "";
  EXPECT_THAT(open_spec(g).message(), HasSubstr("empty name"));

  // Two tensors on the same bytes loaded on main (each weight silently the other's data).
  g = valid_spec();
  g.tensors[1].offset = 224;  // a is [0, 256): b's 34 bytes would start inside it
  EXPECT_THAT(open_spec(g).message(),
              HasSubstr("tensors 'a' [offset 0, size 256] and 'b' [offset 224, size 34] overlap"));
  g = valid_spec();
  g.tensors[1].offset = 0;
  EXPECT_THAT(open_spec(g).message(), HasSubstr("overlap"));
}

// A uint8 array of millions of elements fits in a small file but would cost ~48 bytes an element
// once read: refused by count before anything is allocated.
TEST_F(GgufCorruption, HugeMetadataArraysAreRefused) {
  GgufSpec g = valid_spec();
  const uint64_t n = (1ull << 22) + 1;
  std::string kv = Bytes().str("test.big").u32(9).u32(0).u64(n).s;
  kv.append(n, '\1');
  g.kvs.push_back(kv);
  EXPECT_THAT(open_spec(g).message(),
              HasSubstr("metadata 'test.big': array of 4194305 elements is more than the"));
}

TEST_F(GgufCorruption, EveryTruncationFails) {
  const std::string full = build(valid_spec());
  for (size_t len = 0; len < full.size(); ++len) {
    absl::Status s = open_bytes(full.substr(0, len));
    ASSERT_FALSE(s.ok()) << "truncated to " << len;
    EXPECT_THAT(s.message(), HasSubstr(path_)) << len;
  }
}

// Random byte flips and truncations of the valid file: never a crash (ASan build), errors
// always name the file.
TEST_F(GgufCorruption, FuzzFlipsAndTruncations) {
  const std::string full = build(valid_spec());
  std::mt19937_64 rng(12345);
  int ok = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string bytes = full;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      // Bias flips toward the header, where the interesting fields are.
      const size_t pos = rng() % (rng() % 2 ? 200 : bytes.size());
      bytes[pos] = static_cast<char>(rng() % 3 == 0 ? 0xFF : rng());
    }
    if (rng() % 4 == 0) bytes.resize(rng() % bytes.size());
    absl::Status s = open_bytes(bytes);
    if (s.ok()) {
      ++ok;
    } else {
      EXPECT_THAT(s.message(), HasSubstr(path_));
    }
  }
  EXPECT_LT(ok, 3000);
}

TEST(GgufFixture, TinyModelMetadataAndShapes) {
  const std::string path = fixtures() + "/tiny/model.f32.gguf";
  auto g = GgufFile::open(path);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(*(*g)->get_string("general.architecture"), "llama");
  EXPECT_EQ(*(*g)->get_int("llama.block_count"), 2);
  EXPECT_EQ(*(*g)->get_int("llama.embedding_length"), 64);
  EXPECT_EQ(*(*g)->get_string("tokenizer.ggml.model"), "gpt2");
  auto tokens = (*g)->get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok());
  EXPECT_EQ(tokens->size(), 512u);
  EXPECT_EQ((*tokens)[1], "<|im_start|>");
  EXPECT_EQ((*g)->get_int_array("tokenizer.ggml.token_type")->at(2), 3);
  const GgufTensorInfo* e = (*g)->find_tensor("token_embd.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(e->dtype, DType::kF32);
}

TEST(GgufFixture, SmolLM2Directory) {
  const char* cache = std::getenv("KILN_CACHE");
  const std::string path =
      std::string(cache ? cache : std::string(std::getenv("HOME")) + "/.cache/kiln") +
      "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::ifstream(path)) GTEST_SKIP() << path << " not present (scripts/fetch-model.sh)";
  auto g = GgufFile::open(path);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ((*g)->tensors().size(), 272u);
  const GgufTensorInfo* e = (*g)->find_tensor("token_embd.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->shape, (std::vector<int64_t>{49152, 576}));
  EXPECT_EQ(e->dtype, DType::kQ8_0);
  EXPECT_EQ((*g)->find_tensor("blk.0.attn_k.weight")->shape, (std::vector<int64_t>{192, 576}));
  EXPECT_EQ(*(*g)->get_float("llama.rope.freq_base"), 100000.0);
}

}  // namespace
}  // namespace kiln
