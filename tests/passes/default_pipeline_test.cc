// The default pipeline on Llama step graphs: no unfused softmax/RMSNorm/RoPE pattern is left, and
// the fused graph computes the same logits as the primitive one on the CPU reference backend
// over a ragged prefill and 8 decode steps (fp32, relative error <= 1e-5).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>

#include <unistd.h>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "ir/ops.h"
#include "ir/printer.h"
#include "ir/view.h"
#include "models/llama_graph.h"
#include "models/model_source.h"
#include "models/weights.h"
#include "passes/pass_manager.h"
#include "runtime/reference/executor.h"
#include "tests/derived_params.h"
#include "tests/fixtures.h"

namespace kiln {
namespace {

std::map<OpKind, int> count_ops(const Graph& g) {
  std::map<OpKind, int> counts;
  for (const auto& n : g.nodes()) counts[n->op]++;
  return counts;
}

// Extra shapes beside the fixture presets: head_dim 64 (GQA, tied) and 128 (MHA, untied, llama3
// scaling). Written once into the fixtures folder by scripts/make_fixture.py --config.
std::string extra_fixture(const std::string& name) {
  const std::string dir = testing::fixture(name);
  if (std::filesystem::exists(dir + "/model.safetensors")) return dir;
  std::string config;
  if (name == "passes-hd64") {
    config = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128,
      "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 2,
      "num_key_value_heads": 1, "head_dim": 64, "max_position_embeddings": 128,
      "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "tie_word_embeddings": true,
      "vocab_size": 256, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"})";
  } else {
    config = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
      "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
      "num_key_value_heads": 2, "head_dim": 128, "max_position_embeddings": 256,
      "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": false,
      "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
      "vocab_size": 256, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"})";
  }
  const std::string tmp = absl::StrCat(dir, ".tmp", ::getpid());
  std::filesystem::create_directories(tmp);
  std::ofstream(tmp + "/config.json") << config;
  const std::string cmd =
      absl::StrCat("python3 ", KILN_SOURCE_DIR, "/scripts/make_fixture.py --config ", tmp,
                   "/config.json --out ", tmp, " --no-gguf > /dev/null");
  if (std::system(cmd.c_str()) != 0) return "";
  // Atomic publish: a test running in parallel sees all or nothing (and may have won the race).
  std::error_code ec;
  std::filesystem::rename(tmp, dir, ec);
  std::filesystem::remove_all(tmp, ec);
  return std::filesystem::exists(dir + "/model.safetensors") ? dir : "";
}

std::string model_path(const std::string& name) {
  if (name.rfind("passes-", 0) == 0) return extra_fixture(name);
  if (name == "tiny-gguf") return testing::fixture("tiny", "model.f32.gguf");
  return testing::fixture(name);
}

StepLimits small_limits() {
  StepLimits limits;
  limits.max_tokens = 32;
  limits.max_seqs = 4;
  limits.max_context = 64;
  limits.page_size = 4;
  limits.max_pool_pages = 64;
  limits.dtype = DType::kF32;
  return limits;
}

class DefaultPipeline : public ::testing::TestWithParam<std::string> {};

TEST_P(DefaultPipeline, LeavesNoUnfusedPatterns) {
  auto config = load_model_config(model_path(GetParam()));
  ASSERT_TRUE(config.ok()) << config.status();
  Graph g;
  ASSERT_TRUE(build_llama(*config, small_limits(), g).ok());
  PassContext context;
  ASSERT_TRUE(run_default_pipeline(g, context).ok());
  auto counts = count_ops(g);
  for (OpKind op : {OpKind::kReduceMax, OpKind::kReduceSum, OpKind::kReduceMean, OpKind::kExp,
                    OpKind::kRsqrt, OpKind::kRopeTable, OpKind::kConcat,
                    OpKind::kNeg, OpKind::kPagedQk, OpKind::kPagedPv, OpKind::kCausalMask,
                    OpKind::kKvWrite, OpKind::kMatmul, OpKind::kAdd, OpKind::kMul, OpKind::kSilu}) {
    EXPECT_EQ(counts[op], 0) << op_name(op) << " left after the default pipeline";
  }
  const int layers = static_cast<int>(config->num_layers);
  EXPECT_EQ(counts[OpKind::kFlashAttention], layers);
  EXPECT_EQ(counts[OpKind::kRope], 2 * layers);
  // Every residual add is of the o / down projection's result: gemm-epilogue folds it into the
  // GEMM, and every norm stays a plain rmsnorm (which a small-batch GEMV then absorbs).
  EXPECT_EQ(counts[OpKind::kRmsNormResidual], 0);
  EXPECT_EQ(counts[OpKind::kRmsNorm], 2 * layers + 1);
  EXPECT_EQ(counts[OpKind::kFusedElementwise], layers);  // SwiGLU
  // fuse-horizontal: one GEMM for q/k/v and one for gate/up per layer, then o, down, LM head;
  // their results' slices (3 + 2 per layer) are strided-rows views, never copies.
  EXPECT_EQ(counts[OpKind::kGemm], 4 * layers + 1);
  EXPECT_EQ(counts[OpKind::kSlice], 5 * layers);
  for (const auto& n : g.nodes()) {
    if (n->op != OpKind::kSlice) continue;
    std::optional<StridedRows> view = strided_rows(*n->outputs[0]);
    ASSERT_TRUE(view.has_value());
    EXPECT_EQ(view->base->producer->op, OpKind::kGemm);
  }
  EXPECT_EQ(context.stats["fuse-horizontal"]["matmuls merged"], 5 * layers);
  EXPECT_EQ(context.stats["fuse-attention"]["fused"], layers);
}

// An fp8e4m3 KV cache: the same fusions, every flash_attention carries its layer's scale arrays
// (and returns them written: they alias the inputs, so plan-memory keeps them out of the arena),
// and plan-kv records the dtype with the scales in the bytes per page.
TEST_P(DefaultPipeline, Fp8KvCachesFuseWithTheirScaleArrays) {
  auto config = load_model_config(model_path(GetParam()));
  ASSERT_TRUE(config.ok()) << config.status();
  StepLimits limits = small_limits();
  limits.kv_dtype = DType::kFP8E4M3;
  Graph g;
  ASSERT_TRUE(build_llama(*config, limits, g).ok());
  PassContext context;
  ASSERT_TRUE(run_default_pipeline(g, context).ok());
  auto counts = count_ops(g);
  for (OpKind op : {OpKind::kPagedQk, OpKind::kPagedPv, OpKind::kKvWrite}) {
    EXPECT_EQ(counts[op], 0) << op_name(op) << " left after the default pipeline";
  }
  EXPECT_EQ(counts[OpKind::kFlashAttention], config->num_layers);
  int layer = 0;
  const ValueNames names(g);
  std::set<std::string> in_place;  // the attentions' cache and scale results
  for (const auto& n : g.nodes()) {
    const std::optional<FlashAttentionOp> a = op_view<FlashAttentionOp>(n.get());
    if (!a) continue;
    ASSERT_TRUE(a->has_scales());
    ASSERT_NE(a->k_scales_out(), nullptr);
    for (const Value* v :
         {a->k_cache_out(), a->v_cache_out(), a->k_scales_out(), a->v_scales_out()}) {
      in_place.insert(names(v));
    }
    EXPECT_EQ(a->k_scales()->name, absl::StrCat("k_scales.", layer));
    EXPECT_EQ(a->v_scales()->name, absl::StrCat("v_scales.", layer));
    EXPECT_EQ(a->k_cache()->type.dtype, DType::kFP8E4M3);
    EXPECT_EQ(a->output()->type.dtype, DType::kF32);  // the activations (f32 here)
    ++layer;
  }
  ASSERT_TRUE(context.kv_layout.has_value());
  EXPECT_EQ(context.kv_layout->dtype, DType::kFP8E4M3);
  EXPECT_EQ(context.stats["plan-kv"]["scale_bytes_per_page_per_layer"],
            2 * limits.page_size * config->num_kv_heads * 4);
  ASSERT_TRUE(context.memory_plan.has_value());
  EXPECT_EQ(in_place.size(), 4 * static_cast<size_t>(config->num_layers));
  for (const auto& b : context.memory_plan->buffers) {
    EXPECT_FALSE(in_place.count(b.value)) << b.value << " is in the arena";
  }
}

// Inputs of one step: `news[s]` new tokens for sequence s after `lens[s]` cached ones. Sequence s
// owns pages [16 s, 16 s + 16) of the pool.
InputBindings step_inputs(const std::vector<int32_t>& tokens, const std::vector<int>& lens,
                          const std::vector<int>& news, int page_size) {
  InputBindings in;
  std::vector<int32_t> positions, slots, qo = {0}, kv_indptr = {0}, kv_indices, last;
  for (size_t s = 0; s < lens.size(); ++s) {
    const int base_page = 16 * static_cast<int>(s);
    for (int i = 0; i < news[s]; ++i) {
      const int pos = lens[s] + i;
      positions.push_back(pos);
      slots.push_back((base_page + pos / page_size) * page_size + pos % page_size);
    }
    qo.push_back(qo.back() + news[s]);
    const int total = lens[s] + news[s];
    const int pages = (total + page_size - 1) / page_size;
    for (int p = 0; p < pages; ++p) kv_indices.push_back(base_page + p);
    kv_indptr.push_back(kv_indptr.back() + pages);
    last.push_back(total - (pages - 1) * page_size);
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
  return in;
}

// The fused graph against the primitive one over a ragged prefill and 8 decodes, their caches of
// `kv_dtype` (the activations' by default; fp8e4m3 with its scale arrays) bound alike. Logits
// within `tolerance` of each other, relative to their largest magnitude, at every step.
void expect_fused_matches_primitive(const std::string& model, std::optional<DType> kv_dtype,
                                    double tolerance) {
  const std::string path = model_path(model);
  ASSERT_FALSE(path.empty()) << "could not write fixture " << model;
  auto config = load_model_config(path);
  ASSERT_TRUE(config.ok()) << config.status();
  StepLimits limits = small_limits();
  limits.kv_dtype = kv_dtype;
  Graph primitive;
  ASSERT_TRUE(build_llama(*config, limits, primitive).ok());
  std::unique_ptr<Graph> fused = primitive.clone();
  PassContext context;
  ASSERT_TRUE(run_default_pipeline(*fused, context).ok());

  auto weights = path.size() > 5 && path.substr(path.size() - 5) == ".gguf"
                     ? load_gguf_weights(path)
                     : load_safetensors_weights(path);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ParamViews params;
  for (const Value* p : primitive.params()) {
    const Weight* w = weights->find(p->name);
    ASSERT_NE(w, nullptr) << p->name;
    ASSERT_EQ(w->dtype, DType::kF32) << p->name;
    params[p->name] = ParamView{DType::kF32, w->shape, w->bytes.data()};
  }
  ParamViews fused_params;  // with fuse-horizontal's stacked Q/K/V and gate/up weights
  std::vector<std::vector<uint8_t>> stacked;
  kiln::testing::bind_params(*fused, *weights, fused_params, stacked);
  auto ref = ReferenceExecutor::create(primitive, params, 2);
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto opt = ReferenceExecutor::create(*fused, fused_params, 2);
  ASSERT_TRUE(opt.ok()) << opt.status();

  // One set of KV caches per executor, same shapes.
  const int64_t cache_elems =
      limits.max_pool_pages * limits.page_size * config->num_kv_heads * config->head_dim;
  const std::vector<int64_t> cache_shape = {limits.max_pool_pages, limits.page_size,
                                            config->num_kv_heads, config->head_dim};
  std::vector<std::vector<float>> caches[2];
  for (auto& set : caches) set.assign(2 * config->num_layers, std::vector<float>(cache_elems, 0));
  const bool fp8 = kv_dtype == DType::kFP8E4M3;
  const std::vector<int64_t> scale_shape = {limits.max_pool_pages, limits.page_size,
                                            config->num_kv_heads};
  std::vector<std::vector<float>> scales[2];
  for (auto& set : scales) {
    set.assign(fp8 ? 2 * config->num_layers : 0,
               std::vector<float>(cache_elems / config->head_dim, 0));
  }
  auto bind_caches = [&](InputBindings& in, int which) {
    for (int64_t l = 0; l < config->num_layers; ++l) {
      in.caches[absl::StrCat("k_cache.", l)] = {caches[which][2 * l].data(), cache_shape};
      in.caches[absl::StrCat("v_cache.", l)] = {caches[which][2 * l + 1].data(), cache_shape};
      if (!fp8) continue;
      in.caches[absl::StrCat("k_scales.", l)] = {scales[which][2 * l].data(), scale_shape};
      in.caches[absl::StrCat("v_scales.", l)] = {scales[which][2 * l + 1].data(), scale_shape};
    }
  };

  // A ragged prefill of two prompts (5 and 7 tokens), then 8 decode steps of both.
  std::mt19937 rng(7);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 12; ++i) tokens.push_back(static_cast<int32_t>(rng() % config->vocab_size));
  std::vector<int> lens = {0, 0}, news = {5, 7};
  for (int step = 0; step < 9; ++step) {
    InputBindings in[2];
    for (int e = 0; e < 2; ++e) {
      in[e] = step_inputs(tokens, lens, news, static_cast<int>(limits.page_size));
      bind_caches(in[e], e);
    }
    auto want = (*ref)->run(in[0]);
    ASSERT_TRUE(want.ok()) << want.status();
    auto got = (*opt)->run(in[1]);
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
    EXPECT_LE(max_diff / max_abs, tolerance) << model << " step " << step;
    // Next: each sequence's greedy token from the primitive graph's logits.
    tokens.clear();
    for (int s = 0; s < 2; ++s) {
      auto row = a.begin() + s * config->vocab_size;
      tokens.push_back(static_cast<int32_t>(std::max_element(row, row + config->vocab_size) - row));
      lens[s] += news[s];
      news[s] = 1;
    }
  }
}

TEST_P(DefaultPipeline, FusedGraphMatchesPrimitiveGraphOnTheReferenceBackend) {
  expect_fused_matches_primitive(GetParam(), std::nullopt, 1e-5);  // fp32: summation order only
}

// With an fp8e4m3 KV cache (issue 14): fuse-attention carries the scale arrays into
// flash_attention, which quantizes and dequantizes as the primitive kv_write / paged_qk /
// paged_pv do. The two graphs' K/V rows differ only in fp32 summation order (1e-7 relatively),
// but a row value that close to an e4m3 rounding boundary lands one code apart (2^-4 relatively)
// in the two runs: rare (about 1e-7 / 2^-4 of the elements), and then a logit moves by well under
// 1e-3 of the largest.
TEST_P(DefaultPipeline, Fp8KvFusedGraphMatchesPrimitiveGraphOnTheReferenceBackend) {
  expect_fused_matches_primitive(GetParam(), DType::kFP8E4M3, 1e-3);
}

// The pipeline scales linearly in the layer count. A layer is ~55 primitive nodes; the graph's
// own bookkeeping is counted exactly (the node order is rebuilt a fixed number of times per run,
// never once per rewrite), and the wall time of 3x the layers stays within 7x (linear is 3x,
// quadratic 9x; the slack absorbs a loaded machine).
struct ScalingRun {
  double seconds = 0;
  GraphStats stats;
  int nodes = 0;
};

ScalingRun run_layers(int layers) {
  ModelConfig c;
  c.architecture = "llama";
  c.hidden_size = 64;
  c.num_layers = layers;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 32;
  c.intermediate_size = 64;
  c.vocab_size = 64;
  c.max_context = 128;
  c.tie_embeddings = true;
  c.weights_dtype = DType::kF32;
  ScalingRun best;
  best.seconds = 1e9;
  for (int rep = 0; rep < 2; ++rep) {  // the faster of two runs: less noise from other jobs
    Graph g;
    EXPECT_TRUE(build_llama(c, small_limits(), g).ok());
    const int nodes = g.num_nodes();
    PassContext context;
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = run_default_pipeline(g, context);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_EQ(context.stats["fuse-attention"]["fused"], layers);
    if (seconds < best.seconds) best = {seconds, g.stats(), nodes};
  }
  return best;
}

TEST(DefaultPipelineScaling, LinearInTheLayerCount) {
  const ScalingRun small = run_layers(10);
  const ScalingRun medium = run_layers(1000);
  const ScalingRun large = run_layers(3000);
  EXPECT_GT(medium.nodes, 50000);
  // Bookkeeping per run does not grow with the graph.
  EXPECT_EQ(large.stats.order_rebuilds, small.stats.order_rebuilds);
  EXPECT_EQ(large.stats.renumbers, small.stats.renumbers);
  // 3x the layers: linear is ~3x, quadratic ~9x. Below ~1000 layers the graph still fits the
  // caches, so smaller runs are superlinearly faster (100 -> 1000 layers measured 26-67x on a
  // shared 2-core machine, with or without fuse-horizontal; 1000 -> 3000 measured 3.0-4.4x):
  // both runs sit past that knee.
  EXPECT_LT(large.seconds / std::max(medium.seconds, 1e-3), 7)
      << "1000 layers: " << medium.seconds << " s, 3000 layers: " << large.seconds << " s";
  EXPECT_LT(medium.seconds, 10) << "the 1000-layer pipeline target";
}

INSTANTIATE_TEST_SUITE_P(Models, DefaultPipeline,
                         ::testing::Values("tiny", "tiny-gqa", "tiny-qwen2", "tiny-llama3",
                                           "tiny-gguf", "passes-hd64", "passes-hd128"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return n;
                         });

}  // namespace
}  // namespace kiln
