// build_llama: the step graph verifies, is made of primitive ops only, round-trips through text,
// and its params match the checkpoint's weights by name and shape.
#include "models/llama_graph.h"

#include <map>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "models/model_source.h"
#include "models/weights.h"
#include "tests/fixtures.h"

namespace kiln {
namespace {

std::map<OpKind, int> count_ops(const Graph& g) {
  std::map<OpKind, int> counts;
  for (const auto& n : g.nodes()) counts[n->op]++;
  return counts;
}

class LlamaGraphFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(LlamaGraphFixture, VerifiesAndMatchesTheCheckpoint) {
  auto config = load_model_config(testing::fixture(GetParam()));
  ASSERT_TRUE(config.ok()) << config.status();
  Graph g;
  StepLimits limits;
  limits.dtype = DType::kF32;
  ASSERT_TRUE(build_llama(*config, limits, g).ok());
  ASSERT_TRUE(verify(g).ok()) << verify(g);

  auto counts = count_ops(g);
  for (const auto& [op, n] : counts) EXPECT_FALSE(op_traits(op).fused) << op_name(op);
  const int layers = static_cast<int>(config->num_layers);
  EXPECT_EQ(counts[OpKind::kPagedQk], layers);
  EXPECT_EQ(counts[OpKind::kPagedPv], layers);
  EXPECT_EQ(counts[OpKind::kKvWrite], 2 * layers);
  EXPECT_EQ(counts[OpKind::kRsqrt], 2 * layers + 1);  // two norms per layer + the final norm
  EXPECT_EQ(counts[OpKind::kMatmul], 7 * layers + 1);
  EXPECT_EQ(counts[OpKind::kRopeTable], 2);

  // Every param is a checkpoint weight of the same shape, and nothing the graph needs is missing.
  auto weights = load_safetensors_weights(testing::fixture(GetParam()));
  ASSERT_TRUE(weights.ok()) << weights.status();
  for (const Value* p : g.params()) {
    const Weight* w = weights->find(p->name);
    ASSERT_NE(w, nullptr) << "graph param @" << p->name << " is not in the checkpoint";
    ASSERT_EQ(w->shape.size(), p->type.shape.size()) << p->name;
    for (size_t i = 0; i < w->shape.size(); ++i)
      EXPECT_EQ(w->shape[i], p->type.shape[i].value) << p->name;
  }
  EXPECT_EQ(g.params().size(), weights->all().size());

  std::string text = print_graph(g);
  auto again = parse_graph(text);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(print_graph(**again), text);
}

INSTANTIATE_TEST_SUITE_P(Presets, LlamaGraphFixture,
                         ::testing::Values("tiny", "tiny-gqa", "tiny-qwen2", "tiny-llama3"));

TEST(LlamaGraph, GgufLlamaUsesInterleavedRope) {
  auto config = load_model_config(testing::fixture("tiny", "model.f32.gguf"));
  ASSERT_TRUE(config.ok()) << config.status();
  Graph g;
  ASSERT_TRUE(build_llama(*config, StepLimits{}, g).ok());
  ASSERT_TRUE(verify(g).ok()) << verify(g);
  std::string text = print_graph(g);
  EXPECT_THAT(text, ::testing::HasSubstr("layout = \"interleaved\""));
  EXPECT_THAT(text, ::testing::HasSubstr("output logits = "));
  EXPECT_EQ(g.outputs()[0].value->type.to_string(), "f32[S,512]");
}

TEST(LlamaGraph, RejectsBadLimitsAndReusedGraphs) {
  auto config = load_model_config(testing::fixture("tiny"));
  ASSERT_TRUE(config.ok());
  Graph g;
  StepLimits bad;
  bad.max_tokens = 0;
  EXPECT_FALSE(build_llama(*config, bad, g).ok());
  ASSERT_TRUE(build_llama(*config, StepLimits{}, g).ok());
  EXPECT_FALSE(build_llama(*config, StepLimits{}, g).ok());
}

// A small Llama config for the variant tests (no checkpoint needed to build the graph).
ModelConfig small_config() {
  auto c = model_config_from_hf_json(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 96, "vocab_size": 128, "max_position_embeddings": 256})");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : ModelConfig{};
}

// head_dim independent of hidden / heads (e.g. Gemma-style 4 x 32 heads over hidden 64): the
// projections are [heads x head_dim, hidden] and o_proj maps back to hidden.
TEST(LlamaGraph, HeadDimOtherThanHiddenOverHeads) {
  ModelConfig c = small_config();
  c.head_dim = 32;  // 4 x 32 = 128 != 64
  Graph g;
  StepLimits limits;
  limits.max_tokens = 16;
  limits.max_seqs = 2;
  ASSERT_TRUE(build_llama(c, limits, g).ok());
  ASSERT_TRUE(verify(g).ok()) << verify(g);
  std::map<std::string, std::string> params;
  for (const Value* p : g.params()) params[p->name] = p->type.to_string();
  EXPECT_EQ(params["layers.0.q_proj"], "bf16[128,64]");
  EXPECT_EQ(params["layers.0.k_proj"], "bf16[64,64]");
  EXPECT_EQ(params["layers.0.o_proj"], "bf16[64,128]");
}

TEST(LlamaGraph, SlidingWindowRefusesLongerContextByName) {
  ModelConfig c = small_config();
  c.sliding_window = 128;
  c.max_context = 128;
  Graph g;
  StepLimits limits;
  limits.max_context = 256;
  absl::Status s = build_llama(c, limits, g);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()),
              ::testing::HasSubstr("exceeds the model's sliding_window of 128"));
  limits.max_context = 128;  // within the window: full attention is exact
  Graph ok;
  EXPECT_TRUE(build_llama(c, limits, ok).ok());
}

TEST(LlamaGraph, LimitsWhoseProductsOverflowAreRefused) {
  ModelConfig c = small_config();
  Graph g;
  StepLimits limits;
  limits.max_pool_pages = int64_t{1} << 62;
  limits.page_size = 16;
  absl::Status s = build_llama(c, limits, g);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("overflow"));
}

}  // namespace
}  // namespace kiln
