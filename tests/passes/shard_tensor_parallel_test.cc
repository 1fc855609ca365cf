// shard-tensor-parallel: IR text in and out (column-parallel then row-parallel matmuls with an
// all_reduce, the vocabulary-split projection with an all_gather, biases, no change for one
// rank), the errors for head counts, fused input and quantization blocks, and on Llama step graphs
// (MHA, GQA with replicated KV heads, Qwen2 biases, tied embeddings) the sharded and fused
// program run on N ranks computes the unsharded graph's logits on the CPU reference backend.
#include <algorithm>
#include <cmath>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "models/llama_graph.h"
#include "models/model_source.h"
#include "models/weights.h"
#include "passes/pass_registry.h"
#include "runtime/reference/executor.h"
#include "tests/derived_params.h"
#include "tests/fixtures.h"
#include "tests/passes/pass_test_util.h"

namespace kiln {
namespace {

using testing::canonical;
using ::testing::HasSubstr;

// Runs shard-tensor-parallel over `ranks` on IR text.
absl::StatusOr<testing::PassRun> shard(std::string_view ir, int ranks,
                                       std::map<std::string, DType> weight_dtypes = {}) {
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(ir);
  if (!g.ok()) return g.status();
  PassManagerOptions options;
  options.verify_each = true;
  absl::StatusOr<PassManager> pm = PassManager::from_names({"shard-tensor-parallel"}, options);
  if (!pm.ok()) return pm.status();
  testing::PassRun run;
  run.context.tensor_parallel = ranks;
  run.context.weight_dtypes = std::move(weight_dtypes);
  if (absl::Status s = pm->run(**g, run.context); !s.ok()) return s;
  run.text = print_graph(**g);
  run.graph = std::move(*g);
  return run;
}

// An MLP block with a residual and a final vocabulary projection.
constexpr char kMlp[] = R"(graph @g {
  symbol T <= 16
  symbol S <= 4
  input %x : f32[T,8]
  input %qo_indptr : i32[S+1]
  param @gate : f32[12,8]
  param @up : f32[12,8]
  param @down : f32[8,12]
  param @bias : f32[12]
  param @head : f32[20,8]
  %g = matmul(%x, @gate) : f32[T,12]
  %gb = add(%g, @bias) : f32[T,12]
  %u = matmul(%x, @up) : f32[T,12]
  %a = mul(%gb, %u) : f32[T,12]
  %d = matmul(%a, @down) : f32[T,8]
  %h = add(%x, %d) : f32[T,8]
  %last = last_token_rows(%h, %qo_indptr) : f32[S,8]
  %logits = matmul(%last, @head) : f32[S,20]
  output logits = %logits
})";

TEST(ShardTensorParallel, ColumnsThenRowsWithAnAllReduceAndGatheredLogits) {
  auto run = shard(kMlp, 2);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->text, canonical(R"(graph @g {
  ranks 2
  symbol T <= 16
  symbol S <= 4
  input %x : f32[T,8]
  input %qo_indptr : i32[S+1]
  param @gate.shard : f32[6,8] = shards(rows("gate"[0:6]), rows("gate"[6:12]))
  param @bias.shard : f32[6] = shards(rows("bias"[0:6]), rows("bias"[6:12]))
  param @up.shard : f32[6,8] = shards(rows("up"[0:6]), rows("up"[6:12]))
  param @down.shard : f32[8,6] = shards(cols("down"[0:6]), cols("down"[6:12]))
  param @head.shard : f32[10,8] = shards(rows("head"[0:10]), rows("head"[10:20]))
  %g = matmul(%x, @gate.shard) : f32[T,6]
  %gb = add(%g, @bias.shard) : f32[T,6]
  %u = matmul(%x, @up.shard) : f32[T,6]
  %a = mul(%gb, %u) : f32[T,6]
  %d = matmul(%a, @down.shard) : f32[T,8]
  %0 = all_reduce(%d) {ranks = 2} : f32[T,8]
  %h = add(%x, %0) : f32[T,8]
  %last = last_token_rows(%h, %qo_indptr) : f32[S,8]
  %logits = matmul(%last, @head.shard) : f32[S,10]
  %1 = all_gather(%logits) {axis = 1, ranks = 2} : f32[S,20]
  output logits = %1
})"));
  const PassContext& c = run->context;
  EXPECT_EQ(testing::stat(c, "shard-tensor-parallel", "weights split by rows"), 4);
  EXPECT_EQ(testing::stat(c, "shard-tensor-parallel", "weights split by columns"), 1);
  EXPECT_EQ(testing::stat(c, "shard-tensor-parallel", "all_reduce inserted"), 1);
  EXPECT_EQ(testing::stat(c, "shard-tensor-parallel", "all_gather inserted"), 1);
}

TEST(ShardTensorParallel, OneRankOrAnAlreadyShardedGraphIsNoChange) {
  for (int ranks : {1}) {
    auto run = shard(kMlp, ranks);
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->text, canonical(kMlp));
  }
  auto sharded = shard(kMlp, 2);
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  auto again = shard(sharded->text, 2);  // a dump of a sharded graph, compiled again
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->text, sharded->text);
  EXPECT_THAT(shard(sharded->text, 4).status().message(),
              HasSubstr("already sharded over 2 ranks, not 4"));
}

// When N does not divide the vocabulary, every rank computes the whole projection; any other
// column-parallel matmul N does not divide is an error naming the weight.
TEST(ShardTensorParallel, UndividedVocabularyStaysWholeOtherMatmulsAreRefused) {
  auto run = shard(kMlp, 3);  // 3 divides 12 (the MLP), not 20 (the vocabulary)
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_THAT(run->text, HasSubstr("%logits = matmul(%last, @head) : f32[S,20]\n"));
  EXPECT_THAT(run->text, ::testing::Not(HasSubstr("all_gather")));
  EXPECT_EQ(testing::stat(run->context, "shard-tensor-parallel",
                          "vocabulary projections kept whole (N does not divide the vocabulary)"),
            1);
  EXPECT_THAT(shard(kMlp, 5).status().message(),
              HasSubstr("5 ranks do not divide the 12 output features of @gate"));
}

TEST(ShardTensorParallel, RefusesFusedInput) {
  auto run = shard(R"(graph @g {
  symbol T <= 16
  input %x : f32[T,8]
  param @w : f32[8,8]
  param @n : f32[8]
  %r = rmsnorm(%x, @n) {eps = 1e-05} : f32[T,8]
  %y = matmul(%r, @w) : f32[T,8]
  output y = %y
})",
                   2);
  EXPECT_THAT(run.status().message(), HasSubstr("runs on the primitive graph, before the fusions"));
}

// A rank's column slice of a GGUF weight must hold whole blocks: 64 columns over 4 ranks are 16
// per rank, half a Q4_0 block.
TEST(ShardTensorParallel, RefusesAShardThatSplitsAQuantizationBlock) {
  const char* ir = R"(graph @g {
  symbol T <= 16
  input %x : f32[T,64]
  param @up : f32[64,64]
  param @down : f32[64,64]
  %u = matmul(%x, @up) : f32[T,64]
  %d = matmul(%u, @down) : f32[T,64]
  output d = %d
})";
  const std::map<std::string, DType> q4 = {{"up", DType::kQ4_0}, {"down", DType::kQ4_0}};
  EXPECT_TRUE(shard(ir, 2, q4).ok());  // 32 columns per rank: one block
  EXPECT_THAT(shard(ir, 4, q4).status().message(),
              HasSubstr("a rank's cols [0:16) of @down split a q4_0 block of 32 values"));
}

StepLimits small_limits() {
  StepLimits limits;
  limits.max_tokens = 16;
  limits.max_seqs = 2;
  limits.max_context = 32;
  limits.page_size = 4;
  limits.max_pool_pages = 32;
  limits.dtype = DType::kF32;
  return limits;
}

absl::StatusOr<ModelConfig> config_of(const std::string& preset) {
  return load_model_config(kiln::testing::fixture(preset));
}

absl::Status shard_model(const ModelConfig& config, int ranks, Graph& g) {
  if (absl::Status s = build_llama(config, small_limits(), g); !s.ok()) return s;
  PassContext context;
  context.tensor_parallel = ranks;
  absl::StatusOr<std::unique_ptr<Pass>> pass = create_pass("shard-tensor-parallel");
  if (!pass.ok()) return pass.status();
  absl::StatusOr<bool> changed = (*pass)->run(g, context);
  if (!changed.ok()) return changed.status();
  return verify(g);
}

TEST(ShardTensorParallel, HeadCountErrorsSayWhatDivides) {
  auto config = config_of("tiny-gqa");  // 4 query heads, 2 KV heads
  ASSERT_TRUE(config.ok()) << config.status();
  Graph three;
  EXPECT_THAT(shard_model(*config, 3, three).message(),
              HasSubstr("3 does not divide the 4 query heads"));
  ModelConfig odd = *config;  // 6 query heads over 3 KV heads: 2 divides neither way
  odd.num_heads = 6;
  odd.num_kv_heads = 3;
  odd.hidden_size = 96;
  Graph two;
  EXPECT_THAT(shard_model(odd, 2, two).message(),
              HasSubstr("2 must divide the 3 KV heads, or be a multiple of them"));
}

// GQA over more ranks than KV heads: each rank holds the one KV head its query heads read.
TEST(ShardTensorParallel, ReplicatesKvHeadsWhenRanksExceedThem) {
  auto config = config_of("tiny-gqa");  // 4 query heads, 2 KV heads, head_dim 16, tied
  ASSERT_TRUE(config.ok()) << config.status();
  Graph g;
  ASSERT_TRUE(shard_model(*config, 4, g).ok()) << shard_model(*config, 4, g);
  EXPECT_EQ(g.ranks(), 4);
  EXPECT_EQ(g.find_input("k_cache.0")->type.to_string(), "f32[NP,4,1,16]");
  const Value* k = g.find_param("layers.0.k_proj.shard");
  ASSERT_NE(k, nullptr);
  ASSERT_EQ(k->rank_parts.size(), 4u);
  EXPECT_EQ(k->rank_parts[0][0].begin, 0);
  EXPECT_EQ(k->rank_parts[1][0].begin, 0);  // ranks 0 and 1 share KV head 0
  EXPECT_EQ(k->rank_parts[2][0].begin, 16);
  EXPECT_EQ(k->rank_parts[3][0].end, 32);
  const Value* q = g.find_param("layers.0.q_proj.shard");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->rank_parts[3][0].begin, 48);  // one query head per rank
  // Tied embeddings: the gather reads the whole table, the LM head its vocabulary slice.
  EXPECT_NE(g.find_param("embed"), nullptr);
  EXPECT_NE(g.find_param("embed.shard"), nullptr);
  EXPECT_THAT(print_graph(g), HasSubstr("= gather(@embed, %tokens)"));
}

TEST(ShardTensorParallel, Qwen2BiasesSplitWithTheirRows) {
  auto config = config_of("tiny-qwen2");
  ASSERT_TRUE(config.ok()) << config.status();
  Graph g;
  ASSERT_TRUE(shard_model(*config, 2, g).ok());
  const Value* kb = g.find_param("layers.0.k_bias.shard");
  ASSERT_NE(kb, nullptr);
  EXPECT_EQ(kb->rank_parts[1],
            (std::vector<ParamPart>{{"layers.0.k_bias", SliceAxis::kRows, 16, 32}}));
}

// The sharded program, through the whole default pipeline (fuse-horizontal's per-rank stacks,
// fused attention, ...), run on every rank in one process, against the unsharded primitive graph:
// a ragged prefill of two prompts, then decode steps, greedy from the reference's logits. The
// products are summed in another order (per-rank partial sums, then the all_reduce in rank order),
// so the logits agree to rounding: 1e-5 of their largest magnitude, in fp32.
class ShardedNumerics : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(ShardedNumerics, MatchesTheUnshardedGraphOnTheReferenceBackend) {
  const auto& [preset, ranks] = GetParam();
  const std::string path = kiln::testing::fixture(preset);
  auto config = load_model_config(path);
  ASSERT_TRUE(config.ok()) << config.status();
  const StepLimits limits = small_limits();
  Graph primitive;
  ASSERT_TRUE(build_llama(*config, limits, primitive).ok());
  std::unique_ptr<Graph> sharded = primitive.clone();
  PassContext context;
  context.tensor_parallel = ranks;
  ASSERT_TRUE(run_default_pipeline(*sharded, context).ok());
  ASSERT_EQ(sharded->ranks(), ranks);
  EXPECT_EQ(context.stats["shard-tensor-parallel"]["all_reduce inserted"], 2 * config->num_layers);

  auto weights = load_safetensors_weights(path);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ParamViews params;
  for (const Value* p : primitive.params()) {
    const Weight* w = weights->find(p->name);
    ASSERT_NE(w, nullptr) << p->name;
    params[p->name] = ParamView{DType::kF32, w->shape, w->bytes.data()};
  }
  std::vector<ParamViews> rank_params(ranks);
  std::vector<std::vector<uint8_t>> storage;
  for (int r = 0; r < ranks; ++r) {
    kiln::testing::bind_rank_params(*sharded, r, *weights, rank_params[r], storage);
  }
  auto ref = ReferenceExecutor::create(primitive, params, 2);
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto tp = ReferenceExecutor::create_ranks(*sharded, rank_params, 2);
  ASSERT_TRUE(tp.ok()) << tp.status();

  // KV caches: the reference's whole, then each rank's own heads.
  const int64_t page_elems = limits.page_size * config->head_dim;
  const int64_t rank_heads = sharded->find_input("k_cache.0")->type.shape[2].value;
  const std::vector<int64_t> full_shape = {limits.max_pool_pages, limits.page_size,
                                           config->num_kv_heads, config->head_dim};
  const std::vector<int64_t> rank_shape = {limits.max_pool_pages, limits.page_size, rank_heads,
                                           config->head_dim};
  std::vector<std::vector<float>> full(
      2 * config->num_layers,
      std::vector<float>(limits.max_pool_pages * page_elems * config->num_kv_heads));
  std::vector<std::vector<float>> per_rank(
      ranks * 2 * config->num_layers,
      std::vector<float>(limits.max_pool_pages * page_elems * rank_heads));

  std::mt19937 rng(5);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 12; ++i) tokens.push_back(static_cast<int32_t>(rng() % config->vocab_size));
  std::vector<int> lens = {0, 0}, news = {5, 7};
  double worst = 0;
  for (int step = 0; step < 5; ++step) {
    // Sequence s owns pages [8 s, 8 s + 8).
    InputBindings in;
    std::vector<int32_t> positions, slots, qo = {0}, kv_indptr = {0}, kv_indices, last;
    for (int s = 0; s < 2; ++s) {
      for (int i = 0; i < news[s]; ++i) {
        const int pos = lens[s] + i;
        positions.push_back(pos);
        slots.push_back((8 * s + pos / 4) * 4 + pos % 4);
      }
      qo.push_back(qo.back() + news[s]);
      const int total = lens[s] + news[s], pages = (total + 3) / 4;
      for (int p = 0; p < pages; ++p) kv_indices.push_back(8 * s + p);
      kv_indptr.push_back(kv_indptr.back() + pages);
      last.push_back(total - (pages - 1) * 4);
    }
    auto ints = [](const std::vector<int32_t>& v) {
      return HostTensor::ints({static_cast<int64_t>(v.size())}, v);
    };
    in.tensors["tokens"] = ints(tokens);
    in.tensors["positions"] = ints(positions);
    in.tensors["slot_mapping"] = ints(slots);
    in.tensors["qo_indptr"] = ints(qo);
    in.tensors["kv_page_indptr"] = ints(kv_indptr);
    in.tensors["kv_page_indices"] = ints(kv_indices);
    in.tensors["kv_last_page_len"] = ints(last);
    InputBindings whole = in;
    std::vector<InputBindings> each(ranks, in);
    for (int64_t l = 0; l < config->num_layers; ++l) {
      whole.caches[absl::StrCat("k_cache.", l)] = {full[2 * l].data(), full_shape};
      whole.caches[absl::StrCat("v_cache.", l)] = {full[2 * l + 1].data(), full_shape};
      for (int r = 0; r < ranks; ++r) {
        const size_t at = (r * config->num_layers + l) * 2;
        each[r].caches[absl::StrCat("k_cache.", l)] = {per_rank[at].data(), rank_shape};
        each[r].caches[absl::StrCat("v_cache.", l)] = {per_rank[at + 1].data(), rank_shape};
      }
    }
    auto want = (*ref)->run(whole);
    ASSERT_TRUE(want.ok()) << want.status();
    auto got = (*tp)->run_ranks(each);
    ASSERT_TRUE(got.ok()) << got.status();
    const std::vector<float>& a = (*want)[0].f;
    const std::vector<float>& b = (*got)[0].f;
    ASSERT_EQ(a.size(), b.size());
    ASSERT_EQ(a.size(), 2 * static_cast<size_t>(config->vocab_size));
    double max_abs = 0, max_diff = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      max_abs = std::max(max_abs, std::abs(static_cast<double>(a[i])));
      max_diff = std::max(max_diff, std::abs(static_cast<double>(a[i]) - b[i]));
    }
    ASSERT_GT(max_abs, 0);
    worst = std::max(worst, max_diff / max_abs);
    EXPECT_LE(max_diff / max_abs, 1e-5)
        << preset << " x" << ranks << " step " << step << ": max |diff| " << max_diff
        << ", max |logit| " << max_abs;
    tokens.clear();
    for (int s = 0; s < 2; ++s) {
      auto row = a.begin() + s * config->vocab_size;
      tokens.push_back(static_cast<int32_t>(std::max_element(row, row + config->vocab_size) - row));
      lens[s] += news[s];
      news[s] = 1;
    }
  }
  RecordProperty("max_relative_difference", absl::StrFormat("%.3g", worst));
}

INSTANTIATE_TEST_SUITE_P(Models, ShardedNumerics,
                         ::testing::Combine(::testing::Values("tiny", "tiny-gqa", "tiny-qwen2",
                                                              "tiny-llama3"),
                                            ::testing::Values(2, 4)),
                         [](const auto& info) {
                           std::string n = absl::StrCat(std::get<0>(info.param), "_tp",
                                                        std::get<1>(info.param));
                           for (char& c : n)
                             c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return n;
                         });

}  // namespace
}  // namespace kiln
