// WeightSet round trips: safetensors (single, sharded, bf16, f16) and GGUF (f32 and quantized)
// fixtures of the same random model give the same parameters; real SmolLM2 vs gguf-py.
#include "models/weights.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "models/dequantize.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;

std::string fixtures() {
  const char* d = std::getenv("KILN_FIXTURES");
  return d ? d : "/KILN_FIXTURES-not-set";
}

std::vector<float> f32_of(const Weight& w) {
  std::vector<float> out(w.elements());
  absl::Status s = to_f32(w, absl::MakeSpan(out));
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

std::vector<char> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Undoes convert_hf_to_gguf's llama q/k permutation: GGUF row h*R/n + 2j + i holds HF row
// h*R/n + i*R/n/2 + j.
std::vector<float> unpermute(const std::vector<float>& g, int64_t rows, int64_t cols,
                             int64_t n_head) {
  std::vector<float> out(g.size());
  const int64_t per = rows / n_head, half = per / 2;
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t j = 0; j < half; ++j)
      for (int64_t i = 0; i < 2; ++i)
        std::memcpy(&out[(h * per + i * half + j) * cols], &g[(h * per + 2 * j + i) * cols],
                    cols * sizeof(float));
  return out;
}

class Preset : public ::testing::TestWithParam<std::string> {
 protected:
  std::string dir() const { return fixtures() + "/" + GetParam(); }
};

TEST_P(Preset, SafetensorsAndF32GgufAgree) {
  auto hf = load_safetensors_weights(dir());
  ASSERT_TRUE(hf.ok()) << hf.status();
  auto gg = load_gguf_weights(dir() + "/model.f32.gguf");
  ASSERT_TRUE(gg.ok()) << gg.status();
  ASSERT_NE(gg->gguf(), nullptr);
  const std::string arch = *gg->gguf()->get_string("general.architecture");
  const int64_t n_head = *gg->gguf()->get_int(arch + ".attention.head_count");
  const int64_t n_kv = *gg->gguf()->get_int(arch + ".attention.head_count_kv");
  EXPECT_TRUE(hf->ignored().empty());
  ASSERT_EQ(hf->all().size(), gg->all().size());
  ASSERT_NE(hf->find("embed"), nullptr);
  ASSERT_NE(hf->find("layers.1.down_proj"), nullptr);
  EXPECT_EQ(hf->find("layers.0.q_bias") != nullptr, arch == "qwen2");
  for (const Weight& h : hf->all()) {
    const Weight* g = gg->find(h.name);
    ASSERT_NE(g, nullptr) << h.name;
    EXPECT_EQ(h.shape, g->shape) << h.name;
    EXPECT_EQ(g->dtype, DType::kF32);
    std::vector<float> gv = f32_of(*g);
    const bool q = h.name.ends_with(".q_proj"), k = h.name.ends_with(".k_proj");
    if (arch == "llama" && (q || k)) {
      gv = unpermute(gv, g->shape[0], g->shape[1], q ? n_head : n_kv);
    }
    EXPECT_EQ(f32_of(h), gv) << h.name;
  }
  // llama3 rope scaling rides along as rope_freqs, which kiln does not map.
  if (GetParam() == "tiny-llama3") {
    EXPECT_THAT(gg->ignored(), ::testing::ElementsAre("rope_freqs.weight"));
  }
}

TEST_P(Preset, ShardedEqualsSingleFile) {
  auto one = load_safetensors_weights(dir());
  auto sharded = load_safetensors_weights(dir() + "/sharded");
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  ASSERT_EQ(one->all().size(), sharded->all().size());
  std::set<std::string> files;
  for (const Weight& w : one->all()) {
    const Weight* s = sharded->find(w.name);
    ASSERT_NE(s, nullptr) << w.name;
    files.insert(s->source_file);
    EXPECT_EQ(w.shape, s->shape);
    EXPECT_TRUE(std::equal(w.bytes.begin(), w.bytes.end(), s->bytes.begin(), s->bytes.end()))
        << w.name;
  }
  EXPECT_EQ(files.size(), 3u);
}

// Quantized GGUFs of the same model: kept in their stored type, dequantized bit-exactly as
// gguf-py does (model.<type>.expected.f32: every tensor in file order).
TEST_P(Preset, QuantizedGgufMatchesGgufPy) {
  for (const std::string type : {"q8_0", "q4_0", "q4_1"}) {
    auto gg = load_gguf_weights(dir() + "/model." + type + ".gguf");
    ASSERT_TRUE(gg.ok()) << gg.status();
    EXPECT_EQ(dtype_name(gg->find("layers.0.gate_proj")->dtype), type);
    EXPECT_EQ(gg->find("layers.0.attn_norm")->dtype, DType::kF32);
    const std::vector<char> expected = read_all(dir() + "/model." + type + ".expected.f32");
    size_t pos = 0;
    for (const GgufTensorInfo& t : gg->gguf()->tensors()) {
      Weight w{.name = t.name,
               .dtype = t.dtype,
               .shape = t.shape,
               .bytes = gg->gguf()->tensor_bytes(t),
               .source_file = "",
               .source_offset = 0,
               .source_name = t.name};
      std::vector<float> got = f32_of(w);
      ASSERT_LE(pos + got.size() * 4, expected.size());
      ASSERT_EQ(std::memcmp(got.data(), expected.data() + pos, got.size() * 4), 0)
          << type << " " << t.name;
      pos += got.size() * 4;
    }
    EXPECT_EQ(pos, expected.size());
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Preset,
                         ::testing::Values("tiny", "tiny-gqa", "tiny-qwen2", "tiny-llama3"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST(Weights, Bf16AndF16CheckpointsHoldTheRoundedF32Values) {
  auto f32 = load_safetensors_weights(fixtures() + "/tiny");
  auto bf16 = load_safetensors_weights(fixtures() + "/tiny/bf16");
  auto f16 = load_safetensors_weights(fixtures() + "/tiny/f16");
  ASSERT_TRUE(f32.ok() && bf16.ok() && f16.ok());
  for (const Weight& w : f32->all()) {
    const Weight* b = bf16->find(w.name);
    const Weight* h = f16->find(w.name);
    ASSERT_TRUE(b && h) << w.name;
    EXPECT_EQ(b->dtype, DType::kBF16);
    EXPECT_EQ(h->dtype, DType::kF16);
    // Our round-to-nearest-even against the fixture script's numpy bit arithmetic.
    std::vector<uint16_t> got(w.elements());
    ASSERT_TRUE(to_bf16(w, absl::MakeSpan(got)).ok());
    EXPECT_EQ(std::memcmp(got.data(), b->bytes.data(), b->bytes.size()), 0) << w.name;
    const std::vector<float> wf = f32_of(w), hf = f32_of(*h), bf = f32_of(*b);
    for (size_t i = 0; i < wf.size(); ++i) {
      ASSERT_EQ(hf[i], static_cast<float>(static_cast<_Float16>(wf[i]))) << w.name << " " << i;
      ASSERT_EQ(bf[i], bf16_to_f32(got[i]));
    }
  }
}

TEST(Weights, QuantizedToBf16IsDequantizedThenRounded) {
  auto gg = load_gguf_weights(fixtures() + "/tiny/model.q4_1.gguf");
  ASSERT_TRUE(gg.ok()) << gg.status();
  const Weight* w = gg->find("lm_head");
  ASSERT_NE(w, nullptr);
  std::vector<uint16_t> b(w->elements());
  ASSERT_TRUE(to_bf16(*w, absl::MakeSpan(b)).ok());
  const std::vector<float> f = f32_of(*w);
  for (size_t i = 0; i < f.size(); ++i) ASSERT_EQ(b[i], f32_to_bf16(f[i])) << i;
}

TEST(Weights, OutputSizeMismatchIsAnError) {
  auto gg = load_gguf_weights(fixtures() + "/tiny/model.q8_0.gguf");
  ASSERT_TRUE(gg.ok()) << gg.status();
  const Weight* w = gg->find("embed");
  std::vector<float> small(10);
  absl::Status s = to_f32(*w, absl::MakeSpan(small));
  EXPECT_THAT(s.message(), HasSubstr("token_embd.weight' has 32768 elements, output holds 10"));
  std::vector<uint16_t> small16(10);
  EXPECT_FALSE(to_bf16(*w, absl::MakeSpan(small16)).ok());
}

TEST(Weights, GgufErrorsSurfaceThroughTheLoader) {
  auto gg = load_gguf_weights(fixtures() + "/tiny/config.json");
  EXPECT_THAT(gg.status().message(), HasSubstr("config.json: bad magic"));
}

// The real default model, when present: a few tensors against gguf-py's dequantization.
TEST(Weights, SmolLM2MatchesGgufPy) {
  const char* cache = std::getenv("KILN_CACHE");
  const std::string path =
      std::string(cache ? cache : std::string(std::getenv("HOME")) + "/.cache/kiln") +
      "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::ifstream(path)) GTEST_SKIP() << path << " not present (scripts/fetch-model.sh)";
  const std::string expect_dir = fixtures() + "/smollm2";
  if (!std::ifstream(expect_dir + "/.complete")) {
    GTEST_SKIP() << "no gguf-py expectations in " << expect_dir
                 << " (the model appeared after the fixtures were made; delete that folder's "
                    "parent stamp or rerun make_fixture.py --test-fixtures)";
  }
  auto gg = load_gguf_weights(path);
  ASSERT_TRUE(gg.ok()) << gg.status();
  EXPECT_EQ(gg->all().size(), 272u);  // tied embeddings: no output.weight
  EXPECT_EQ(gg->find("lm_head"), nullptr);
  struct Case {
    std::string name, file;
    int64_t rows;  // leading rows compared (0 = all)
  };
  for (const Case& c : {Case{"layers.0.q_proj", "blk.0.attn_q.weight.f32", 0},
                        Case{"layers.29.down_proj", "blk.29.ffn_down.weight.f32", 0},
                        Case{"embed", "token_embd.weight.rows8.f32", 8}}) {
    const Weight* w = gg->find(c.name);
    ASSERT_NE(w, nullptr) << c.name;
    Weight part = *w;
    if (c.rows > 0) {
      part.shape = {c.rows, w->shape[1]};
      part.bytes = w->bytes.subspan(0, w->bytes.size() / w->shape[0] * c.rows);
    }
    const std::vector<float> got = f32_of(part);
    const std::vector<char> want = read_all(expect_dir + "/" + c.file);
    ASSERT_EQ(want.size(), got.size() * 4) << c.name;
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size()), 0) << c.name;
  }
  EXPECT_EQ(gg->find("layers.0.q_proj")->dtype, DType::kQ4_1);
  EXPECT_EQ(gg->find("embed")->dtype, DType::kQ8_0);
}

}  // namespace
}  // namespace kiln
