// fuse-horizontal: matmuls sharing an input -> one matmul over concat(weights) + slices (with
// merged biases); on Llama step graphs (incl. Qwen2's biases, GQA, tied embeddings) the merged
// graph computes the same logits as the primitive one on the CPU reference backend.
#include <algorithm>
#include <cmath>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_replace.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "models/llama_graph.h"
#include "models/model_source.h"
#include "models/weights.h"
#include "runtime/reference/executor.h"
#include "tests/derived_params.h"
#include "tests/fixtures.h"
#include "tests/passes/pass_test_util.h"

namespace kiln {
namespace {

using testing::canonical;
using testing::run_passes;

constexpr char kGraph[] = R"(graph @g {
  symbol T <= 16
  input %x : f32[T,8]
  input %h : f32[T,8]
)";

// The params of kHeader but those named in `gone` (the ones a derived param replaced), then
// `derived` (their printed declarations).
std::string params(const std::vector<std::string>& gone = {}, const std::string& derived = "") {
  std::string out;
  for (const auto& [name, type] : std::vector<std::pair<std::string, std::string>>{
           {"q", "f32[4,8]"}, {"k", "f32[2,8]"}, {"v", "f32[2,8]"}, {"bq", "f32[4]"},
           {"bk", "f32[2]"}, {"bv", "f32[2]"}, {"o", "f32[4,8]"}}) {
    if (std::find(gone.begin(), gone.end(), name) == gone.end()) {
      absl::StrAppend(&out, "  param @", name, " : ", type, "\n");
    }
  }
  return out + derived;
}

const std::string kHeader = absl::StrCat(kGraph, params());

TEST(FuseHorizontal, MergesQkvIntoOneMatmulOverADerivedParamAndSlices) {
  auto run = run_passes(absl::StrCat(kHeader, R"(  %a = matmul(%x, @q) : f32[T,4]
  %b = matmul(%x, @k) : f32[T,2]
  %c = matmul(%x, @v) : f32[T,2]
  %d = matmul(%h, @o) : f32[T,4]
  output a = %a
  output b = %b
  output c = %c
  output d = %d
})"),
                        {"fuse-horizontal"});
  ASSERT_TRUE(run.ok()) << run.status();
  // The stacked weight names its checkpoint rows; @q, @k and @v, now unread, are gone.
  EXPECT_EQ(run->text,
            canonical(absl::StrCat(
                kGraph,
                params({"q", "k", "v"},
                       "  param @q_k_v : f32[8,8] = rows(\"q\"[0:4], \"k\"[0:2], \"v\"[0:2])\n"),
                R"(  %0 = matmul(%x, @q_k_v) : f32[T,8]
  %1 = slice(%0) {axis = 1, end = 4, start = 0} : f32[T,4]
  %2 = slice(%0) {axis = 1, end = 6, start = 4} : f32[T,2]
  %3 = slice(%0) {axis = 1, end = 8, start = 6} : f32[T,2]
  %d = matmul(%h, @o) : f32[T,4]
  output a = %1
  output b = %2
  output c = %3
  output d = %d
})")));
  EXPECT_EQ(testing::stat(run->context, "fuse-horizontal", "merged 3 matmuls"), 1);
  EXPECT_EQ(testing::stat(run->context, "fuse-horizontal", "matmuls merged"), 3);
}

TEST(FuseHorizontal, MergesBiasesWhenEveryMemberHasOne) {
  auto run = run_passes(absl::StrCat(kHeader, R"(  %a = matmul(%x, @q) : f32[T,4]
  %a2 = add(%a, @bq) : f32[T,4]
  %b = matmul(%x, @k) : f32[T,2]
  %b2 = add(@bk, %b) : f32[T,2]
  output a = %a2
  output b = %b2
})"),
                        {"fuse-horizontal", "gemm-epilogue"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text,
            canonical(absl::StrCat(
                kGraph,
                params({"q", "k", "bq", "bk"},
                       "  param @q_k : f32[6,8] = rows(\"q\"[0:4], \"k\"[0:2])\n"
                       "  param @bq_bk : f32[6] = rows(\"bq\"[0:4], \"bk\"[0:2])\n"),
                R"(  %0 = gemm(%x, @q_k, @bq_bk) {epilogue = "bias"} : f32[T,6]
  %1 = slice(%0) {axis = 1, end = 4, start = 0} : f32[T,4]
  %2 = slice(%0) {axis = 1, end = 6, start = 4} : f32[T,2]
  output a = %1
  output b = %2
})")));
  EXPECT_EQ(testing::stat(run->context, "fuse-horizontal", "biases merged"), 2);
}

TEST(FuseHorizontal, KeepsBiasAddsWhenOnlySomeMembersHaveOne) {
  auto run = run_passes(absl::StrCat(kHeader, R"(  %a = matmul(%x, @q) : f32[T,4]
  %a2 = add(%a, @bq) : f32[T,4]
  %b = matmul(%x, @k) : f32[T,2]
  output a = %a2
  output b = %b
})"),
                        {"fuse-horizontal"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text,
            canonical(absl::StrCat(
                kGraph,
                params({"q", "k"}, "  param @q_k : f32[6,8] = rows(\"q\"[0:4], \"k\"[0:2])\n"),
                R"(  %0 = matmul(%x, @q_k) : f32[T,6]
  %1 = slice(%0) {axis = 1, end = 4, start = 0} : f32[T,4]
  %2 = slice(%0) {axis = 1, end = 6, start = 4} : f32[T,2]
  %a2 = add(%1, @bq) : f32[T,4]
  output a = %a2
  output b = %2
})")));
  EXPECT_EQ(testing::stat(run->context, "fuse-horizontal", "biases merged"), 0);
}

TEST(FuseHorizontal, StacksOnlyWeightsStoredAlike) {
  // A Q4_K_M file keeps V in Q6_K: q and k stack, v keeps its own GEMM.
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(absl::StrCat(kHeader, R"(  %a = matmul(%x, @q) : f32[T,4]
  %b = matmul(%x, @k) : f32[T,2]
  %c = matmul(%x, @v) : f32[T,2]
  output a = %a
  output b = %b
  output c = %c
})"));
  ASSERT_TRUE(g.ok()) << g.status();
  PassContext context;
  context.weight_dtypes = {{"q", DType::kQ4_K}, {"k", DType::kQ4_K}, {"v", DType::kQ6_K}};
  absl::StatusOr<PassManager> pm = PassManager::from_names({"fuse-horizontal"}, {});
  ASSERT_TRUE(pm.ok()) << pm.status();
  ASSERT_TRUE(pm->run(**g, context).ok());
  EXPECT_EQ(context.stats["fuse-horizontal"]["merged 2 matmuls"], 1);
  EXPECT_EQ(context.stats["fuse-horizontal"]["matmuls merged"], 2);
  ASSERT_NE((*g)->find_param("q_k"), nullptr);
  EXPECT_NE((*g)->find_param("v"), nullptr);
  EXPECT_EQ((*g)->find_param("q"), nullptr);
}

TEST(FuseHorizontal, DerivedParamsRoundTripAndAreVerified) {
  const std::string merged = absl::StrCat(
      kGraph, params({"q", "k"}, "  param @q_k : f32[6,8] = rows(\"q\"[0:4], \"k\"[0:2])\n"),
      "  %0 = matmul(%x, @q_k) : f32[T,6]\n  output a = %0\n}\n");
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(merged);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(print_graph(**g), merged);
  const Value* p = (*g)->find_param("q_k");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->parts,
            (std::vector<ParamPart>{{"q", SliceAxis::kRows, 0, 4}, {"k", SliceAxis::kRows, 0, 2}}));
  EXPECT_TRUE(verify(**g).ok());
  // Rows that do not add up to the declared first dim are refused by name.
  absl::StatusOr<std::unique_ptr<Graph>> bad =
      parse_graph(absl::StrReplaceAll(merged, {{"\"k\"[0:2]", "\"k\"[0:3]"}}));
  ASSERT_TRUE(bad.ok()) << bad.status();
  absl::Status s = verify(**bad);
  EXPECT_THAT(s.message(), ::testing::HasSubstr("@q_k: its parts hold 7 rows"));
  // An empty row range is a parse error at its place.
  EXPECT_FALSE(parse_graph(absl::StrReplaceAll(merged, {{"\"k\"[0:2]", "\"k\"[2:2]"}})).ok());
}

TEST(FuseHorizontal, LeavesMatmulsOfComputedWeightsAndLoneMatmulsAlone) {
  const std::string ir = absl::StrCat(kHeader, R"(  %w = add(@k, @v) : f32[2,8]
  %a = matmul(%x, %w) : f32[T,2]
  %b = matmul(%x, @q) : f32[T,4]
  output a = %a
  output b = %b
})");
  auto run = run_passes(ir, {"fuse-horizontal"});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(ir));
  EXPECT_EQ(testing::stat(run->context, "fuse-horizontal", "not merged: weight is not a param"), 1);
  EXPECT_EQ(testing::stat(run->context, "fuse-horizontal", "matmuls merged"), 0);
}

TEST(FuseHorizontal, ALlamaLayerMergesQkvAndGateUp) {
  auto config = load_model_config(kiln::testing::fixture("tiny-qwen2"));
  ASSERT_TRUE(config.ok()) << config.status();
  StepLimits limits;
  limits.max_tokens = 8;
  limits.max_seqs = 2;
  limits.max_context = 32;
  limits.page_size = 4;
  limits.max_pool_pages = 16;
  limits.dtype = DType::kF32;
  Graph g;
  ASSERT_TRUE(build_llama(*config, limits, g).ok());
  PassContext context;
  absl::StatusOr<PassManager> pm = PassManager::from_names({"fuse-horizontal"}, {});
  ASSERT_TRUE(pm.ok()) << pm.status();
  ASSERT_TRUE(pm->run(g, context).ok());
  const int64_t layers = config->num_layers;
  EXPECT_EQ(context.stats["fuse-horizontal"]["merged 3 matmuls"], layers);  // q, k, v
  EXPECT_EQ(context.stats["fuse-horizontal"]["merged 2 matmuls"], layers);  // gate, up
  EXPECT_EQ(context.stats["fuse-horizontal"]["biases merged"], 3 * layers);  // Qwen2 q/k/v
  int matmuls = 0;
  for (const auto& n : g.nodes()) matmuls += n->op == OpKind::kMatmul;
  EXPECT_EQ(matmuls, 4 * layers + 1);  // qkv, o, gate_up, down per layer + the LM head
}

// Same logits with and without the pass, over a ragged prefill and decode steps (fp32): the
// merged matmul computes each output column with the same dot product, so 1e-6 is ample.
class FuseHorizontalNumerics : public ::testing::TestWithParam<std::string> {};

TEST_P(FuseHorizontalNumerics, MatchesTheUnfusedGraphOnTheReferenceBackend) {
  const std::string path = kiln::testing::fixture(GetParam());
  auto config = load_model_config(path);
  ASSERT_TRUE(config.ok()) << config.status();
  StepLimits limits;
  limits.max_tokens = 16;
  limits.max_seqs = 2;
  limits.max_context = 32;
  limits.page_size = 4;
  limits.max_pool_pages = 32;
  limits.dtype = DType::kF32;
  Graph primitive;
  ASSERT_TRUE(build_llama(*config, limits, primitive).ok());
  std::unique_ptr<Graph> fused = primitive.clone();
  PassContext context;
  // The whole default pipeline after the merge: what the fused graph really runs.
  std::vector<std::string> passes = {"fuse-horizontal"};
  absl::StatusOr<PassManager> pm = PassManager::from_names(passes, {});
  ASSERT_TRUE(pm.ok()) << pm.status();
  ASSERT_TRUE(pm->run(*fused, context).ok());
  ASSERT_GT(context.stats["fuse-horizontal"]["matmuls merged"], 0);

  auto weights = load_safetensors_weights(path);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ParamViews params;
  for (const Value* p : primitive.params()) {
    const Weight* w = weights->find(p->name);
    ASSERT_NE(w, nullptr) << p->name;
    params[p->name] = ParamView{DType::kF32, w->shape, w->bytes.data()};
  }
  ParamViews fused_params;
  std::vector<std::vector<uint8_t>> stacked;
  kiln::testing::bind_params(*fused, *weights, fused_params, stacked);
  auto ref = ReferenceExecutor::create(primitive, params, 2);
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto opt = ReferenceExecutor::create(*fused, fused_params, 2);
  ASSERT_TRUE(opt.ok()) << opt.status();

  const int64_t cache_elems =
      limits.max_pool_pages * limits.page_size * config->num_kv_heads * config->head_dim;
  const std::vector<int64_t> cache_shape = {limits.max_pool_pages, limits.page_size,
                                            config->num_kv_heads, config->head_dim};
  std::vector<std::vector<float>> caches[2];
  for (auto& set : caches) set.assign(2 * config->num_layers, std::vector<float>(cache_elems, 0));
  // One prompt of 6 tokens at pages [0, 8), then 3 decode steps.
  std::mt19937 rng(11);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 6; ++i) tokens.push_back(static_cast<int32_t>(rng() % config->vocab_size));
  int len = 0;
  for (int step = 0; step < 4; ++step) {
    const int n = static_cast<int>(tokens.size());
    std::vector<std::vector<float>> logits;
    for (int e = 0; e < 2; ++e) {
      InputBindings in;
      std::vector<int32_t> positions, slots;
      for (int i = 0; i < n; ++i) {
        positions.push_back(len + i);
        slots.push_back(len + i);  // pages 0.. in order: slot = position
      }
      const int total = len + n;
      const int pages = (total + 3) / 4;
      std::vector<int32_t> indices;
      for (int p = 0; p < pages; ++p) indices.push_back(p);
      auto ints = [](const std::vector<int32_t>& v) {
        return HostTensor::ints({static_cast<int64_t>(v.size())}, v);
      };
      in.tensors["tokens"] = ints(tokens);
      in.tensors["positions"] = ints(positions);
      in.tensors["slot_mapping"] = ints(slots);
      in.tensors["qo_indptr"] = ints({0, n});
      in.tensors["kv_page_indptr"] = ints({0, pages});
      in.tensors["kv_page_indices"] = ints(indices);
      in.tensors["kv_last_page_len"] = ints({total - (pages - 1) * 4});
      for (int64_t l = 0; l < config->num_layers; ++l) {
        in.caches[absl::StrCat("k_cache.", l)] = {caches[e][2 * l].data(), cache_shape};
        in.caches[absl::StrCat("v_cache.", l)] = {caches[e][2 * l + 1].data(), cache_shape};
      }
      auto out = (e == 0 ? *ref : *opt)->run(in);
      ASSERT_TRUE(out.ok()) << out.status();
      logits.push_back((*out)[0].f);
    }
    ASSERT_EQ(logits[0].size(), logits[1].size());
    double max_abs = 0, max_diff = 0;
    for (size_t i = 0; i < logits[0].size(); ++i) {
      max_abs = std::max(max_abs, std::abs(static_cast<double>(logits[0][i])));
      max_diff = std::max(max_diff, std::abs(static_cast<double>(logits[0][i]) - logits[1][i]));
    }
    ASSERT_GT(max_abs, 0);
    EXPECT_LE(max_diff / max_abs, 1e-6) << GetParam() << " step " << step;
    auto row = logits[0].begin();
    tokens = {static_cast<int32_t>(
        std::max_element(row, row + config->vocab_size) - row)};
    len += n;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, FuseHorizontalNumerics,
                         ::testing::Values("tiny", "tiny-gqa", "tiny-qwen2", "tiny-llama3"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return n;
                         });

}  // namespace
}  // namespace kiln
