// plan-memory: a property test on random graphs (no two buffers live at once share bytes; all
// fit the arena) and the arena vs. its max-live lower bound on Llama step graphs.
#include <algorithm>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "ir/builder.h"
#include "ir/parser.h"
#include "ir/verifier.h"
#include "models/llama_graph.h"
#include "models/model_source.h"
#include "passes/pass_manager.h"
#include "passes/pass_registry.h"
#include "tests/fixtures.h"

namespace kiln {
namespace {

// Checks the plan's invariants; returns the number of buffers checked.
void expect_valid_plan(const MemoryPlan& plan) {
  ASSERT_GE(plan.arena_bytes, plan.lower_bound_bytes);
  std::vector<const MemoryPlan::Buffer*> own;
  for (const MemoryPlan::Buffer& b : plan.buffers) {
    EXPECT_GE(b.offset, 0) << b.value;
    EXPECT_LE(b.offset + b.size, plan.arena_bytes) << b.value;
    EXPECT_LE(b.first_use, b.last_use) << b.value;
    // A view (a slice) may start inside its base; buffers of their own are aligned.
    if (b.alias_of.empty()) {
      EXPECT_EQ(b.offset % plan.alignment, 0) << b.value;
      own.push_back(&b);
    }
  }
  for (size_t i = 0; i < own.size(); ++i) {
    for (size_t j = i + 1; j < own.size(); ++j) {
      const auto& a = *own[i];
      const auto& b = *own[j];
      const bool live_together = a.first_use <= b.last_use && b.first_use <= a.last_use;
      const bool share_bytes = a.offset < b.offset + b.size && b.offset < a.offset + a.size;
      ASSERT_FALSE(live_together && share_bytes)
          << a.value << " [" << a.offset << "+" << a.size << ", t" << a.first_use << ".."
          << a.last_use << "] and " << b.value << " [" << b.offset << "+" << b.size << ", t"
          << b.first_use << ".." << b.last_use << "]";
    }
  }
}

// A random DAG of elementwise ops, matmuls (changing widths) and reshapes (views) over [T, W].
std::unique_ptr<Graph> random_graph(std::mt19937& rng) {
  auto g = std::make_unique<Graph>("random");
  GraphBuilder b(*g);
  b.symbol("T", 1 + rng() % 64);
  const int64_t widths[] = {4, 16, 64, 256};
  std::vector<Value*> values;
  const int num_inputs = 1 + rng() % 3;
  for (int i = 0; i < num_inputs; ++i) {
    values.push_back(
        b.input(absl::StrCat("x", i),
                {DType::kF32, {Dim::symbolic("T"), Dim::constant(widths[rng() % 4])}}));
  }
  const int num_nodes = 5 + rng() % 40;
  for (int i = 0; i < num_nodes; ++i) {
    Value* a = values[rng() % values.size()];
    const int64_t w = a->type.shape.back().value;
    switch (rng() % 5) {
      case 0: {  // binary op with a same-shaped partner, if any
        std::vector<Value*> same;
        for (Value* v : values) {
          if (v->type == a->type) same.push_back(v);
        }
        values.push_back(b.add(a, same[rng() % same.size()]));
        break;
      }
      case 1: values.push_back(b.exp(a)); break;
      case 2: {
        const int64_t n = widths[rng() % 4];
        values.push_back(b.matmul(
            a,
            b.param(absl::StrCat("w", i), {a->type.dtype, {Dim::constant(n), Dim::constant(w)}})));
        break;
      }
      case 3:
        if (a->type.rank() == 2 && w % 2 == 0) {
          values.push_back(b.reshape(b.reshape(a, {0, w / 2, 2}), {0, w}));
        } else {
          values.push_back(b.silu(a));
        }
        break;
      default: values.push_back(b.cast(a, rng() % 2 ? DType::kBF16 : DType::kF32)); break;
    }
  }
  const int num_outputs = 1 + rng() % 3;
  for (int i = 0; i < num_outputs; ++i) {
    b.output(absl::StrCat("y", i), values[values.size() - 1 - rng() % values.size()]);
  }
  EXPECT_TRUE(b.status().ok()) << b.status();
  return g;
}

// The placement a plain quadratic first-fit computes from the plan's own buffers (largest first,
// then earliest; each at the lowest offset clear of every placed buffer whose live range
// overlaps): the oracle for plan-memory's indexed overlap queries.
std::vector<int64_t> brute_force_offsets(const MemoryPlan& plan) {
  std::vector<const MemoryPlan::Buffer*> own;
  for (const auto& b : plan.buffers) {
    if (b.alias_of.empty()) own.push_back(&b);
  }
  std::vector<int> order(own.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    if (own[a]->size != own[b]->size) return own[a]->size > own[b]->size;
    return own[a]->first_use < own[b]->first_use;
  });
  std::vector<int64_t> offsets(own.size(), 0);
  std::vector<int> placed;
  for (int i : order) {
    std::vector<std::pair<int64_t, int64_t>> busy;
    for (int p : placed) {
      if (own[p]->first_use <= own[i]->last_use && own[i]->first_use <= own[p]->last_use) {
        busy.emplace_back(offsets[p], offsets[p] + own[p]->size);
      }
    }
    std::sort(busy.begin(), busy.end());
    int64_t offset = 0;
    for (const auto& [lo, hi] : busy) {
      if (offset + own[i]->size <= lo) break;
      offset = std::max(offset, hi);
    }
    offsets[i] = offset;
    placed.push_back(i);
  }
  return offsets;
}

TEST(PlanMemory, RandomGraphsNeverOverlapLiveBuffers) {
  std::mt19937 rng(20260117);
  for (int iter = 0; iter < 300; ++iter) {
    std::unique_ptr<Graph> g = random_graph(rng);
    ASSERT_TRUE(verify(*g).ok()) << verify(*g);
    PassContext context;
    auto pass = create_pass("plan-memory");
    ASSERT_TRUE(pass.ok());
    ASSERT_TRUE((*pass)->run(*g, context).ok());
    ASSERT_TRUE(context.memory_plan.has_value());
    // Every node result but a view is an arena buffer of its own; views of intermediates alias.
    int views = 0;
    for (const auto& n : g->nodes()) views += n->op == OpKind::kReshape ? 1 : 0;
    int own = 0, alias = 0;
    for (const auto& b : context.memory_plan->buffers) (b.alias_of.empty() ? own : alias)++;
    EXPECT_EQ(own, g->num_nodes() - views) << "iteration " << iter;
    EXPECT_LE(alias, views) << "iteration " << iter;
    expect_valid_plan(*context.memory_plan);
    std::vector<int64_t> placed;
    for (const auto& b : context.memory_plan->buffers) {
      if (b.alias_of.empty()) placed.push_back(b.offset);
    }
    EXPECT_EQ(placed, brute_force_offsets(*context.memory_plan)) << "iteration " << iter;
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// The Llama step graph after the default pipeline packs within 10% of the max-live bound.
void expect_tight_llama_arena(const std::string& model) {
  auto config = load_model_config(model);
  ASSERT_TRUE(config.ok()) << config.status();
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    Graph g;
    StepLimits limits;
    limits.dtype = dtype;
    ASSERT_TRUE(build_llama(*config, limits, g).ok());
    PassContext context;
    ASSERT_TRUE(run_default_pipeline(g, context).ok());
    ASSERT_TRUE(context.memory_plan.has_value());
    const MemoryPlan& plan = *context.memory_plan;
    expect_valid_plan(plan);
    EXPECT_LE(static_cast<double>(plan.arena_bytes), 1.1 * plan.lower_bound_bytes)
        << model << ": arena " << plan.arena_bytes << " vs lower bound " << plan.lower_bound_bytes;
    // No [T, H, K] scores buffer survives fusion: the largest buffer is at most a [T, vocab]
    // or [T, intermediate] activation.
    int64_t largest = 0;
    for (const auto& b : plan.buffers) largest = std::max(largest, b.size);
    const int64_t widest = std::max(
        {config->intermediate_size, config->vocab_size, config->num_heads * config->head_dim});
    EXPECT_LE(largest, limits.max_tokens * widest * 4) << model;
  }
}

TEST(PlanMemory, LlamaFixtureArenaIsNearTheLowerBound) {
  expect_tight_llama_arena(testing::fixture("tiny-gqa"));
  expect_tight_llama_arena(testing::fixture("tiny-qwen2"));
}

TEST(PlanMemory, SmolLm2ArenaIsNearTheLowerBound) {
  const std::string gguf = testing::smollm2_gguf();
  if (gguf.empty()) GTEST_SKIP() << "SmolLM2 GGUF not in the cache (scripts/fetch-model.sh)";
  expect_tight_llama_arena(gguf);
}

// One buffer exp(x) of `n` f32 elements, planned alone.
absl::StatusOr<MemoryPlan> plan_one_buffer(int64_t n) {
  Graph g("big");
  GraphBuilder b(g);
  Value* x = b.input("x", {DType::kF32, {Dim::constant(n)}});
  b.output("y", b.exp(x));
  if (!b.status().ok()) return b.status();
  PassContext context;
  auto pass = create_pass("plan-memory");
  if (!pass.ok()) return pass.status();
  if (absl::StatusOr<bool> r = (*pass)->run(g, context); !r.ok()) return r.status();
  return *context.memory_plan;
}

// At the int64 boundary: 4 * (2^61 - 64) bytes is 2^63 - 256, which fits and is 256-aligned;
// one more element needs 2^63 - 252 bytes, whose alignment to 256 no longer fits.
TEST(PlanMemory, SizesAtTheInt64BoundaryAreCheckedNotWrapped) {
  const int64_t fits = (int64_t{1} << 61) - 64;
  absl::StatusOr<MemoryPlan> ok = plan_one_buffer(fits);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->arena_bytes, 4 * fits);
  absl::StatusOr<MemoryPlan> over = plan_one_buffer(fits + 1);
  ASSERT_FALSE(over.ok());
  EXPECT_THAT(std::string(over.status().message()), ::testing::HasSubstr("2^63 bytes or more"));
  EXPECT_FALSE(plan_one_buffer(int64_t{1} << 62).ok());  // 2^64 bytes: the multiply overflows
}

// Two symbols whose product overflows int64 elements: refused, not planned into a small arena.
TEST(PlanMemory, SymbolBoundsWhoseProductOverflowsAreRefused) {
  Graph g("big");
  GraphBuilder b(g);
  b.symbol("T", int64_t{1} << 40);
  b.symbol("W", int64_t{1} << 40);
  Value* x = b.input("x", {DType::kF32, {Dim::symbolic("T"), Dim::symbolic("W")}});
  b.output("y", b.exp(x));
  ASSERT_TRUE(b.status().ok()) << b.status();
  PassContext context;
  auto pass = create_pass("plan-memory");
  ASSERT_TRUE(pass.ok());
  absl::StatusOr<bool> r = (*pass)->run(g, context);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("more than 2^63 elements"));
}

// Buffers that each fit but are live together past 2^63 bytes: the live sum is checked too.
TEST(PlanMemory, LiveBuffersWhoseSumOverflowsAreRefused) {
  Graph g("big");
  GraphBuilder b(g);
  const int64_t n = int64_t{1} << 60;  // 2^62 bytes of f32 each
  Value* x = b.input("x", {DType::kF32, {Dim::constant(n)}});
  Value* e1 = b.exp(x);
  Value* e2 = b.exp(x);
  b.output("y", b.add(e1, e2));  // e1, e2 and the sum: 3 * 2^62 bytes live at once
  ASSERT_TRUE(b.status().ok()) << b.status();
  PassContext context;
  auto pass = create_pass("plan-memory");
  ASSERT_TRUE(pass.ok());
  absl::StatusOr<bool> r = (*pass)->run(g, context);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("2^63 bytes or more"));
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// A slice of a merged GEMM's result is a view inside its base (fuse-horizontal's q/k/v): no bytes
// of its own, its first element `start * 4` bytes in, and its readers keep the base live.
TEST(PlanMemory, SlicesAreViewsInsideTheirBaseAndExtendItsLiveRange) {
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(R"(graph @g {
  symbol T <= 16
  input %x : f32[T,8]
  param @w : f32[8,8]
  %y = matmul(%x, @w) : f32[T,8]
  %s = slice(%y) {axis = 1, start = 4, end = 6} : f32[T,2]
  %r = reshape(%s) {shape = [0, 2, 1]} : f32[T,2,1]
  %z = matmul(%x, @w) : f32[T,8]
  %n = neg(%r) : f32[T,2,1]
  output n = %n
  output z = %z
})");
  ASSERT_TRUE(g.ok()) << g.status();
  PassContext context;
  absl::StatusOr<PassManager> pm = PassManager::from_names({"plan-memory"}, {});
  ASSERT_TRUE(pm.ok()) << pm.status();
  ASSERT_TRUE(pm->run(**g, context).ok());
  ASSERT_TRUE(context.memory_plan.has_value());
  const MemoryPlan& plan = *context.memory_plan;
  expect_valid_plan(plan);
  auto find = [&](const std::string& v) -> const MemoryPlan::Buffer* {
    for (const MemoryPlan::Buffer& b : plan.buffers) {
      if (b.value == v) return &b;
    }
    return nullptr;
  };
  const MemoryPlan::Buffer *y = find("%y"), *s = find("%s"), *r = find("%r"), *z = find("%z");
  ASSERT_TRUE(y && s && r && z);
  EXPECT_EQ(s->alias_of, "%y");
  EXPECT_EQ(r->alias_of, "%y");
  EXPECT_EQ(s->offset, y->offset + 4 * 4);
  EXPECT_EQ(r->offset, s->offset);
  // %n reads the view at node 4, so %y stays live there and %z (defined at 3) gets other bytes.
  EXPECT_EQ(y->last_use, 4);
  EXPECT_FALSE(z->offset < y->offset + y->size && y->offset < z->offset + z->size);
}

// A result computed only from views of one value (a SwiGLU over the two halves of the gate/up
// GEMM's product) is live from that value's definition: codegen may compute it inside the GEMM's
// launch (the GEMV's SwiGLU epilogue), while the GEMM still reads %x. So it never takes the bytes
// of a value that dies at the GEMM.
TEST(PlanMemory, AResultOfViewsOfOneValueIsLiveFromThatValuesDefinition) {
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(R"ir(graph @g {
  symbol T <= 16
  input %in : f32[T,8]
  param @w : f32[8,8]
  %x = neg(%in) : f32[T,8]
  %gu = matmul(%x, @w) : f32[T,8]
  %gate = slice(%gu) {axis = 1, start = 0, end = 4} : f32[T,4]
  %up = slice(%gu) {axis = 1, start = 4, end = 8} : f32[T,4]
  %a = fused_elementwise(%gate, %up) {expr = "mul(silu($0), $1)"} : f32[T,4]
  output a = %a
})ir");
  ASSERT_TRUE(g.ok()) << g.status();
  PassContext context;
  absl::StatusOr<PassManager> pm = PassManager::from_names({"plan-memory"}, {});
  ASSERT_TRUE(pm.ok()) << pm.status();
  ASSERT_TRUE(pm->run(**g, context).ok());
  const MemoryPlan& plan = *context.memory_plan;
  expect_valid_plan(plan);
  const MemoryPlan::Buffer *x = nullptr, *a = nullptr, *gu = nullptr;
  for (const MemoryPlan::Buffer& b : plan.buffers) {
    if (b.value == "%x") x = &b;
    if (b.value == "%a") a = &b;
    if (b.value == "%gu") gu = &b;
  }
  ASSERT_TRUE(x && a && gu);
  EXPECT_EQ(a->first_use, gu->first_use);  // node 1, the GEMM, not node 4
  EXPECT_EQ(x->last_use, 1);
  EXPECT_FALSE(a->offset < x->offset + x->size && x->offset < a->offset + a->size)
      << "%a shares bytes with %x, which the GEMM reads while its GEMV would write %a";
}

}  // namespace
}  // namespace kiln
