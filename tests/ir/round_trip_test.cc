// print(parse(print(g))) == print(g) for a graph holding every op kind, and the graph verifies.
#include <algorithm>
#include <chrono>
#include <set>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "tests/ir/test_util.h"

namespace kiln {
namespace {

TEST(RoundTrip, EveryOpKindPrintsAndParsesBack) {
  std::string text = testing::read_source_file("tests/ir/testdata/all_ops.kir");
  ASSERT_FALSE(text.empty());
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(text);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE(verify(**g).ok()) << verify(**g);

  std::set<OpKind> seen;
  for (const auto& n : (*g)->nodes()) seen.insert(n->op);
  for (int i = 0; i < kNumOpKinds; ++i) {
    EXPECT_TRUE(seen.count(static_cast<OpKind>(i)))
        << "all_ops.kir lacks " << op_name(static_cast<OpKind>(i));
  }

  std::string printed = print_graph(**g);
  absl::StatusOr<std::unique_ptr<Graph>> again = parse_graph(printed);
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << printed;
  EXPECT_EQ(print_graph(**again), printed);
  EXPECT_TRUE(verify(**again).ok());
}

TEST(RoundTrip, CloneKeepsTheText) {
  auto g = parse_graph(testing::read_source_file("tests/ir/testdata/all_ops.kir"));
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(print_graph(*(*g)->clone()), print_graph(**g));
}

TEST(RoundTrip, FloatsAndStringsSurvive) {
  const char* text = R"(graph @f {
  %a = constant() {dtype = f32, value = 0.1} : f32[]
  %b = constant() {dtype = f32, value = -inf} : f32[]
  %c = constant() {dtype = f32, value = 1e-300} : f32[]
  %d = fused_elementwise(%a, %b) {dtype = f32, expr = "say \"hi\"\n"} : f32[]
  output x = %d
  output c = %c
})";
  auto g = parse_graph(text);
  ASSERT_TRUE(g.ok()) << g.status();
  std::string printed = print_graph(**g);
  EXPECT_NE(printed.find("value = 0.1}"), std::string::npos) << printed;
  EXPECT_NE(printed.find("value = -inf}"), std::string::npos) << printed;
  auto again = parse_graph(printed);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(print_graph(**again), printed);
  EXPECT_EQ(*(*again)->nodes()[3]->attrs.get_string("expr"), "say \"hi\"\n");
}

TEST(RoundTrip, AnonymousResultsAreRenumberedInOrder) {
  const char* text = R"(graph @g {
  input %x : f32[4]
  %7 = neg(%x) : f32[4]
  %named = exp(%7) : f32[4]
  %3 = neg(%named) : f32[4]
  output y = %3
})";
  auto g = parse_graph(text);
  ASSERT_TRUE(g.ok()) << g.status();
  std::string printed = print_graph(**g);
  EXPECT_NE(printed.find("%0 = neg(%x)"), std::string::npos) << printed;
  EXPECT_NE(printed.find("%named = exp(%0)"), std::string::npos) << printed;
  EXPECT_NE(printed.find("%1 = neg(%named)"), std::string::npos) << printed;
}

// Symbol lookups are hashed: 10x the symbol declarations parse in well under 30x the time (the
// linear table of before made this quadratic: 100k symbols took 34 s).
double parse_symbols_seconds(int count) {
  std::string text = "graph @g {\n";
  for (int i = 0; i < count; ++i) absl::StrAppend(&text, "  symbol S", i, " <= 4\n");
  absl::StrAppend(&text, "  input %x : f32[S", count - 1, "]\n  output y = %x\n}\n");
  double best = 1e9;
  // The best of 5: a loaded CI machine (other tests on the other core) stretches single runs.
  for (int rep = 0; rep < 5; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(text);
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    EXPECT_TRUE(g.ok()) << g.status();
    if (g.ok()) {
      EXPECT_EQ((*g)->symbols().symbols().size(), static_cast<size_t>(count));
    }
  }
  return best;
}

TEST(RoundTrip, ManySymbolsParseInLinearTime) {
  const double small = parse_symbols_seconds(20000);
  const double large = parse_symbols_seconds(200000);
  EXPECT_LT(large / std::max(small, 1e-3), 30) << small << " s vs " << large << " s";
}

// A tensor-parallel program: `ranks`, derived params of rows and of columns, per-rank shards
// (one part list per rank, printed one per line) and the collectives, through print and parse.
TEST(RoundTrip, TensorParallelGraph) {
  const char* text = R"(graph @tp {
  ranks 2
  symbol T <= 8
  input %x : f32[T,8]
  param @qk : f32[6,8] = rows("q"[0:4], "k"[0:2])
  param @o : f32[8,2] = cols("o"[2:4])
  param @up.shard : f32[2,8] = shards(rows("up"[0:2]),
      rows("up"[2:4]))
  param @down.shard : f32[8,2] = shards(cols("down"[0:2]), cols("down"[2:4]))
  %h = matmul(%x, @up.shard) : f32[T,2]
  %p = matmul(%h, @down.shard) : f32[T,8]
  %s = all_reduce(%p) {ranks = 2} : f32[T,8]
  %g = all_gather(%h) {axis = 1, ranks = 2} : f32[T,4]
  %a = matmul(%x, @qk) : f32[T,6]
  %b = matmul(%h, @o) : f32[T,8]
  output s = %s
  output g = %g
  output a = %a
  output b = %b
})";
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(text);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE(verify(**g).ok()) << verify(**g);
  EXPECT_EQ((*g)->ranks(), 2);
  const Value* up = (*g)->find_param("up.shard");
  ASSERT_NE(up, nullptr);
  ASSERT_TRUE(up->sharded());
  EXPECT_EQ(up->parts_of_rank(1), (std::vector<ParamPart>{{"up", SliceAxis::kRows, 2, 4}}));
  const Value* o = (*g)->find_param("o");
  EXPECT_EQ(o->parts, (std::vector<ParamPart>{{"o", SliceAxis::kCols, 2, 4}}));
  EXPECT_EQ(o->parts_of_rank(1), o->parts);  // not sharded: the same on every rank
  const std::string printed = print_graph(**g);
  EXPECT_NE(printed.find("  ranks 2\n"), std::string::npos) << printed;
  EXPECT_NE(printed.find("param @o : f32[8,2] = cols(\"o\"[2:4])\n"), std::string::npos) << printed;
  EXPECT_NE(printed.find("param @down.shard : f32[8,2] = shards(\n      cols(\"down\"[0:2]),\n"
                         "      cols(\"down\"[2:4]))\n"),
            std::string::npos)
      << printed;
  absl::StatusOr<std::unique_ptr<Graph>> again = parse_graph(printed);
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << printed;
  EXPECT_EQ(print_graph(**again), printed);
  EXPECT_EQ(print_graph(*(*again)->clone()), printed);
}

TEST(RoundTrip, TensorParallelTestdata) {
  auto g = parse_graph(testing::read_source_file("tests/ir/testdata/tensor_parallel.kir"));
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE(verify(**g).ok()) << verify(**g);
  const std::string printed = print_graph(**g);
  auto again = parse_graph(printed);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(print_graph(**again), printed);
}

// A graph of one rank prints no `ranks` line, so every existing dump keeps its text.
TEST(RoundTrip, OneRankPrintsNoRanksLine) {
  auto g = parse_graph(testing::read_source_file("tests/ir/testdata/all_ops.kir"));
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(print_graph(**g).find("\n  ranks "), std::string::npos);
}

// clone() after a mid-graph insert and an erase keeps program order (the node list has holes and
// arrival order until nodes() rebuilds it).
TEST(RoundTrip, CloneAfterMidGraphEdits) {
  auto g = parse_graph(R"(graph @g {
  symbol T <= 8
  input %x : f32[T,4]
  %a = exp(%x) : f32[T,4]
  %b = neg(%a) : f32[T,4]
  %dead = exp(%x) : f32[T,4]
  output b = %b
})");
  ASSERT_TRUE(g.ok()) << g.status();
  Graph& graph = **g;
  Node* b = graph.nodes()[1].get();
  Node* mid = graph.add_node(OpKind::kRsqrt, {b->inputs[0]}, {}, {b->inputs[0]->type}, b);
  graph.set_input(b, 0, mid->outputs[0]);
  ASSERT_TRUE(graph.erase_node(graph.nodes()[3].get()).ok());  // %dead, while the order is stale
  const std::string printed = print_graph(graph);
  EXPECT_EQ(print_graph(*graph.clone()), printed);
  EXPECT_TRUE(verify(*graph.clone()).ok());
}

// The fp8e4m3 KV cache forms (issue 14): caches of e4m3 codes with their scale arrays as trailing
// operands, kv_write and flash_attention returning the scales written, paged_pv's dtype. They
// print, parse back to the same text and verify; a wrong result count or a missing scale array
// is a verifier error that says what is expected.
constexpr const char* kFp8KvGraph = R"(graph @fp8kv {
  symbol T <= 32
  symbol S <= 4
  symbol P <= 16
  symbol NP <= 8
  symbol K <= 64
  input %q : bf16[T,4,16]
  input %k : bf16[T,2,16]
  input %k_cache : fp8e4m3[NP,4,2,16]
  input %v_cache : fp8e4m3[NP,4,2,16]
  input %k_scales : f32[NP,4,2]
  input %v_scales : f32[NP,4,2]
  input %positions : i32[T]
  input %slot_mapping : i32[T]
  input %qo_indptr : i32[S+1]
  input %kv_page_indptr : i32[S+1]
  input %kv_page_indices : i32[P]
  input %kv_last_page_len : i32[S]
  %kc, %ks = kv_write(%k_cache, %k, %slot_mapping, %k_scales) : fp8e4m3[NP,4,2,16], f32[NP,4,2]
  %s = paged_qk(%q, %kc, %qo_indptr, %kv_page_indptr, %kv_page_indices, %kv_last_page_len, %ks) {kv_dim = "K"} : f32[T,4,K]
  %o = paged_pv(%s, %v_cache, %qo_indptr, %kv_page_indptr, %kv_page_indices, %kv_last_page_len, %v_scales) {dtype = bf16} : bf16[T,4,16]
  %att, %kc2, %vc2, %ks2, %vs2 = flash_attention(%q, %k, %k, %kc, %v_cache, %positions, %slot_mapping, %qo_indptr, %kv_page_indptr, %kv_page_indices, %kv_last_page_len, %ks, %v_scales) {scale = 0.25} : bf16[T,4,16], fp8e4m3[NP,4,2,16], fp8e4m3[NP,4,2,16], f32[NP,4,2], f32[NP,4,2]
  output o = %o
  output att = %att
})";

TEST(RoundTrip, Fp8KvCacheFormsPrintAndParseBack) {
  auto g = parse_graph(kFp8KvGraph);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE(verify(**g).ok()) << verify(**g);
  const std::string printed = print_graph(**g);
  auto again = parse_graph(printed);
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << printed;
  EXPECT_EQ(print_graph(**again), printed);
  EXPECT_NE(printed.find("%kc, %ks = kv_write(%k_cache, %k, %slot_mapping, %k_scales)"),
            std::string::npos)
      << printed;
}

TEST(RoundTrip, Fp8KvCacheFormErrorsSayWhatIsExpected) {
  using Edits = std::vector<std::pair<std::string, std::string>>;
  auto expect_error = [](const Edits& edits, const std::string& want) {
    std::string text = kFp8KvGraph;
    for (const auto& [from, to] : edits) {
      const size_t at = text.find(from);
      ASSERT_NE(at, std::string::npos) << from;
      text.replace(at, from.size(), to);
    }
    auto g = parse_graph(text);
    const absl::Status s = g.ok() ? verify(**g) : g.status();
    ASSERT_FALSE(s.ok()) << want;
    EXPECT_NE(s.message().find(want), std::string::npos) << s;
  };
  // flash_attention over fp8e4m3 caches declared with three results: it has five.
  expect_error(
      {{"%att, %kc2, %vc2, %ks2, %vs2 = flash_attention", "%att, %kc2, %vc2 = flash_attention"},
       {"fp8e4m3[NP,4,2,16], fp8e4m3[NP,4,2,16], f32[NP,4,2], f32[NP,4,2]\n",
        "fp8e4m3[NP,4,2,16], fp8e4m3[NP,4,2,16]\n"}},
      "has 3 results, flash_attention with these operands has 5");
  // paged_pv of an fp8e4m3 cache without its scale array.
  expect_error({{"%kv_last_page_len, %v_scales) {dtype", "%kv_last_page_len) {dtype"}},
               "fp8e4m3 KV cache, which needs its scale array f32[NP,4,2]");
  // paged_pv of an fp8e4m3 cache without a dtype.
  expect_error({{"%v_scales) {dtype = bf16} : bf16[T,4,16]", "%v_scales) : bf16[T,4,16]"}},
               "needs a `dtype` attribute");
  // A scale array of the wrong shape.
  expect_error({{"input %v_scales : f32[NP,4,2]", "input %v_scales : f32[NP,4,3]"}},
               "must be the scale array f32[NP,4,2]");
}

}  // namespace
}  // namespace kiln
