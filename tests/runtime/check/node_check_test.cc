// run_node_alone / compare_tensors, the core of `kiln run --check`, on the CPU: every node of the
// tiny fixture's fused step graph, run alone on the operands a whole-graph run gave it, reproduces
// that run's result (so a GPU node checked this way is compared with exactly what the reference
// computes there); and with a plan whose IR has one rmsnorm epsilon edited, the edited node, and
// only it, is over its tolerance. The GPU side (CheckedBackend over CudaBackend, and the CLI) is
// tested in tests/runtime/cuda/cuda_backend_gpu_test.cc.
#include "runtime/check/node_check.h"

#include <algorithm>
#include <cmath>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "ir/builder.h"
#include "ir/op_kind.h"
#include "ir/parser.h"
#include "runtime/reference/executor.h"
#include "tests/fixtures.h"
#include "tests/runtime/model_plan.h"

namespace kiln {
namespace {

// A one-sequence prefill of 5 tokens in page 1 of a 2-page pool: the step's bindings, and the
// caches (zeros before the step) they point into.
struct PrefillStep {
  std::vector<std::vector<float>> caches;  // k_cache.0, v_cache.0, k_cache.1, ...
  InputBindings bindings;
  std::vector<int64_t> cache_shape;

  explicit PrefillStep(const KvLayout& kv) {
    const int64_t ps = kv.page_size;
    cache_shape = {2, ps, kv.num_kv_heads, kv.head_dim};
    auto ints = [](std::vector<int32_t> v) {
      const int64_t n = static_cast<int64_t>(v.size());  // before the move below
      return HostTensor::ints({n}, std::move(v));
    };
    const int32_t base = static_cast<int32_t>(ps);
    bindings.tensors["tokens"] = ints({5, 17, 3, 42, 9});
    bindings.tensors["positions"] = ints({0, 1, 2, 3, 4});
    bindings.tensors["slot_mapping"] = ints({base, base + 1, base + 2, base + 3, base + 4});
    bindings.tensors["qo_indptr"] = ints({0, 5});
    bindings.tensors["kv_page_indptr"] = ints({0, 1});
    bindings.tensors["kv_page_indices"] = ints({1});
    bindings.tensors["kv_last_page_len"] = ints({5});
    bindings.symbols.set("K", 5);
    caches.assign(2 * kv.num_layers, std::vector<float>(num_elements(cache_shape), 0.0f));
    for (int32_t l = 0; l < kv.num_layers; ++l) {
      bindings.caches[absl::StrCat("k_cache.", l)] = KvCacheView{caches[2 * l].data(), cache_shape};
      bindings.caches[absl::StrCat("v_cache.", l)] =
          KvCacheView{caches[2 * l + 1].data(), cache_shape};
    }
  }
};

// Every node's results of one whole-graph run ([node][output]), as the executor computed them:
// the graph is cloned with each node result added as an output. The step's caches are left as
// the run wrote them.
std::vector<std::vector<HostTensor>> run_keeping_every_result(const Graph& g,
                                                              const ParamViews& params,
                                                              const InputBindings& bindings) {
  std::unique_ptr<Graph> all = g.clone();
  const size_t first = all->outputs().size();
  for (int i = 0; i < all->num_nodes(); ++i) {
    const Node& n = *all->nodes()[i];
    for (size_t j = 0; j < n.outputs.size(); ++j) {
      all->add_output(absl::StrCat("node", i, "_", j), n.outputs[j]);
    }
  }
  auto ex = ReferenceExecutor::create(*all, params, 1);
  EXPECT_TRUE(ex.ok()) << ex.status();
  if (!ex.ok()) return {};
  auto out = (*ex)->run(bindings);
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return {};
  std::vector<std::vector<HostTensor>> results(all->num_nodes());
  size_t k = first;
  for (int i = 0; i < all->num_nodes(); ++i) {
    for (size_t j = 0; j < all->nodes()[i]->outputs.size(); ++j) {
      results[i].push_back(std::move((*out)[k++]));
    }
  }
  return results;
}

// What node `i` of `g` read in that run: step inputs from the bindings, KV caches as they were
// when it ran (zeros for the node that writes the step's rows; written for the
// readers after it), results of earlier nodes from `results`.
std::vector<HostTensor> operands_of(const Graph& g, int i, const PrefillStep& step,
                                    const std::vector<std::vector<HostTensor>>& results) {
  const Node& n = *g.nodes()[i];
  std::vector<HostTensor> operands;
  for (size_t k = 0; k < n.inputs.size(); ++k) {
    const Value* v = n.inputs[k];
    if (v->kind == ValueKind::kParam) {
      operands.emplace_back();
    } else if (v->kind == ValueKind::kResult) {
      operands.push_back(results[g.index_of(v->producer)][v->output_index]);
    } else if (auto c = step.bindings.caches.find(v->name); c != step.bindings.caches.end()) {
      // Each layer's cache is written by one node of the step (kv_write, or the fused
      // flash_attention): zeros before it, as it left them for any later reader.
      const bool before_write = n.op == OpKind::kKvWrite || n.op == OpKind::kFlashAttention;
      std::vector<float> data = before_write
                                    ? std::vector<float>(num_elements(step.cache_shape), 0.0f)
                                    : std::vector<float>(c->second.data,
                                                         c->second.data + num_elements(step.cache_shape));
      operands.push_back(HostTensor::floats(step.cache_shape, std::move(data), v->type.dtype));
    } else {
      operands.push_back(step.bindings.tensors.at(v->name));
    }
  }
  return operands;
}

struct TinyModel {
  testing::LoadedModel model;
  std::unique_ptr<Graph> graph;
};

TinyModel load_tiny(const std::string& ir_edit_from = "", const std::string& ir_edit_to = "") {
  StepLimits limits;
  limits.max_tokens = 64;
  limits.max_seqs = 4;
  limits.max_context = 64;
  limits.max_pool_pages = 16;
  BackendOptions o;
  o.kv_pages = 1;
  auto m = testing::load_model(testing::fixture("tiny"), limits, o);
  EXPECT_TRUE(m.ok()) << m.status();
  TinyModel t{std::move(*m), nullptr};
  auto g = parse_graph(t.model.plan.ir);
  EXPECT_TRUE(g.ok()) << g.status();
  t.graph = std::move(*g);
  return t;
}

TEST(NodeCheck, EveryNodeAloneReproducesTheWholeGraphRun) {
  TinyModel tiny = load_tiny();
  const Graph& g = *tiny.graph;
  const ParamViews& params = tiny.model.backend->params();
  PrefillStep step(tiny.model.plan.kv);
  const auto results = run_keeping_every_result(g, params, step.bindings);
  ASSERT_EQ(static_cast<int>(results.size()), g.num_nodes());
  std::vector<std::string> ops_seen;
  for (int i = 0; i < g.num_nodes(); ++i) {
    const Node& n = *g.nodes()[i];
    auto alone = run_node_alone(g, n, operands_of(g, i, step, results), params, step.bindings.symbols);
    ASSERT_TRUE(alone.ok()) << "node " << i << " " << op_name(n.op) << ": " << alone.status();
    ASSERT_EQ(alone->size(), n.outputs.size());
    for (size_t j = 0; j < n.outputs.size(); ++j) {
      auto e = compare_tensors((*alone)[j], results[i][j]);
      ASSERT_TRUE(e.ok()) << e.status();
      EXPECT_LE(e->relative, 1e-6) << "node " << i << " " << op_name(n.op) << " result " << j;
    }
    ops_seen.push_back(op_name(n.op));
  }
  // The fused graph's kernels are all among them (what --check checks on the GPU).
  // (Every residual add of a Llama graph is a GEMM epilogue: no rmsnorm_residual is left.)
  for (const char* op : {"rmsnorm", "gemm", "rope", "flash_attention", "fused_elementwise"}) {
    EXPECT_NE(std::find(ops_seen.begin(), ops_seen.end(), op), ops_seen.end()) << op;
  }
}

TEST(NodeCheck, AnEditedEpsilonIsTheOnlyNodeOverItsTolerance) {
  TinyModel good = load_tiny();
  // The first rmsnorm of the IR text gets eps = 0.5 (the planted bug); the rest is unchanged.
  std::string text = good.model.plan.ir;
  std::smatch m;
  const std::regex first_norm(R"((= rmsnorm[a-z_]*\([^\n]*\{[^\n]*eps = )([0-9.e+-]+))");
  ASSERT_TRUE(std::regex_search(text, m, first_norm)) << "no rmsnorm with an eps in the IR";
  const size_t at = m.position(2);
  text.replace(at, m.length(2), "0.5");
  auto bad = parse_graph(text);
  ASSERT_TRUE(bad.ok()) << bad.status();
  int planted = -1;
  for (int i = 0; i < (*bad)->num_nodes() && planted < 0; ++i) {
    if (op_name((*bad)->nodes()[i]->op).rfind("rmsnorm", 0) == 0) planted = i;
  }
  ASSERT_GE(planted, 0);

  const ParamViews& params = good.model.backend->params();
  PrefillStep step(good.model.plan.kv);
  // The "device" runs the edited graph; each node is checked against the original's node.
  const auto results = run_keeping_every_result(**bad, params, step.bindings);
  const Graph& g = *good.graph;
  ASSERT_EQ(g.num_nodes(), (*bad)->num_nodes());
  std::vector<int> diverged;
  for (int i = 0; i < g.num_nodes(); ++i) {
    const Node& n = *g.nodes()[i];
    auto want = run_node_alone(g, n, operands_of(**bad, i, step, results), params,
                               step.bindings.symbols);
    ASSERT_TRUE(want.ok()) << want.status();
    for (size_t j = 0; j < n.outputs.size(); ++j) {
      auto e = compare_tensors(results[i][j], (*want)[j]);
      ASSERT_TRUE(e.ok()) << e.status();
      if (e->relative > result_tolerance(n, j)) diverged.push_back(i);
    }
  }
  ASSERT_FALSE(diverged.empty());
  EXPECT_EQ(diverged.front(), planted);
  for (int i : diverged) EXPECT_EQ(i, planted) << "node " << i << " " << op_name(g.nodes()[i]->op);
}

TEST(NodeCheck, CompareTensorsMeasuresAgainstTheReferenceMagnitude) {
  HostTensor want = HostTensor::floats({4}, {1.0f, -4.0f, 2.0f, 0.5f});
  HostTensor got = HostTensor::floats({4}, {1.0f, -4.2f, 2.0f, 0.5f});
  auto e = compare_tensors(got, want);
  ASSERT_TRUE(e.ok());
  EXPECT_NEAR(e->max_abs, 0.2, 1e-6);
  EXPECT_NEAR(e->max_reference, 4.0, 1e-6);
  EXPECT_NEAR(e->relative, 0.05, 1e-6);

  got.f[3] = std::nanf("");
  e = compare_tensors(got, want);
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(std::isinf(e->relative)) << "a NaN where the reference is finite always diverges";

  HostTensor other = HostTensor::floats({2, 2}, {1, 2, 3, 4});
  e = compare_tensors(other, want);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("shapes differ"), std::string::npos) << e.status();
}

TEST(NodeCheck, ToleranceFollowsTheLowestPrecisionDtype) {
  Graph g;
  GraphBuilder b(g);
  b.symbol("T", 8);
  Value* x32 = b.input("x32", Type{DType::kF32, {Dim::symbolic("T"), Dim::constant(4)}});
  Value* x16 = b.input("x16", Type{DType::kBF16, {Dim::symbolic("T"), Dim::constant(4)}});
  Value* f32_add = b.add(x32, x32);
  Value* bf16_add = b.add(x16, x16);
  b.output("a", f32_add);
  b.output("b", bf16_add);
  EXPECT_DOUBLE_EQ(result_tolerance(*f32_add->producer, 0), 1e-3);
  EXPECT_DOUBLE_EQ(result_tolerance(*bf16_add->producer, 0), 2e-2);
}

// `kiln run --check` over an fp8e4m3 KV plan: an attention reads the same codes on both sides, so
// its output keeps its activations' tolerance (bf16 here), not fp8's 3 mantissa bits; the caches'
// codes get one top-binade e4m3 step, their scales f32's.
TEST(NodeCheck, Fp8KvToleranceIsTheActivationsForOutputsAndPerPartForTheCache) {
  StepLimits limits;
  limits.max_tokens = 64;
  limits.max_seqs = 4;
  limits.max_context = 64;
  limits.kv_dtype = DType::kFP8E4M3;
  auto plan = testing::plan_for_model(testing::fixture("tiny"), limits);
  ASSERT_TRUE(plan.ok()) << plan.status();
  auto g = parse_graph(plan->ir);
  ASSERT_TRUE(g.ok()) << g.status();
  int attentions = 0;
  for (const auto& n : (*g)->nodes()) {
    if (n->op != OpKind::kFlashAttention) continue;
    ++attentions;
    ASSERT_EQ(n->outputs.size(), 5u);
    EXPECT_DOUBLE_EQ(result_tolerance(*n, 0), 2e-2);               // out: bf16
    EXPECT_DOUBLE_EQ(result_tolerance(*n, 1), kFp8CodeTolerance);  // K codes
    EXPECT_DOUBLE_EQ(result_tolerance(*n, 2), kFp8CodeTolerance);  // V codes
    EXPECT_DOUBLE_EQ(result_tolerance(*n, 3), 1e-3);               // K scales
    EXPECT_DOUBLE_EQ(result_tolerance(*n, 4), 1e-3);               // V scales
  }
  EXPECT_GT(attentions, 0);
}

}  // namespace
}  // namespace kiln
