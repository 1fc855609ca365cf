// Each class of verifier error names the offending node.
#include "ir/verifier.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ir/parser.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<Graph> parse_ok(const std::string& text) {
  auto g = parse_graph(text);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? std::move(*g) : std::make_unique<Graph>();
}

const char* kHead = "graph @g {\n  symbol T <= 8\n  input %x : f32[T,4]\n  param @w : f32[3,4]\n";

TEST(Verifier, AcceptsAValidGraph) {
  auto g = parse_ok(std::string(kHead) + "  %y = matmul(%x, @w) : f32[T,3]\n  output y = %y\n}");
  EXPECT_TRUE(verify(*g).ok()) << verify(*g);
}

TEST(Verifier, DeclaredTypeDiffersFromInferred) {
  auto g = parse_ok(std::string(kHead) + "  %y = matmul(%x, @w) : f32[T,4]\n  output y = %y\n}");
  EXPECT_THAT(verify(*g).message(), HasSubstr("%y = matmul(%x, @w) : f32[T,4]: result 0 is "
                                              "declared f32[T,4] but matmul produces f32[T,3]"));
}

TEST(Verifier, InvalidInputTypesAreReportedWithTheNode) {
  auto g = parse_ok(std::string(kHead) +
                    "  input %i : i32[T]\n  %y = exp(%i) : i32[T]\n  output y = %y\n}");
  EXPECT_THAT(verify(*g).message(),
              HasSubstr("%y = exp(%i) : i32[T]: input 0 must be a float tensor, got i32[T]"));
}

TEST(Verifier, MissingRequiredAttribute) {
  auto g = parse_ok(
      "graph @g {\n  input %x : f32[4]\n  param @w : f32[4]\n"
      "  %y = rmsnorm(%x, @w) : f32[4]\n  output y = %y\n}");
  EXPECT_THAT(verify(*g).message(),
              HasSubstr("%y = rmsnorm(%x, @w) : f32[4]: missing attribute 'eps'"));
}

TEST(Verifier, UseBeforeDefinition) {
  auto g = parse_ok(std::string(kHead) +
                    "  %a = neg(%x) : f32[T,4]\n  %b = exp(%a) : f32[T,4]\n"
                    "  output y = %b\n}");
  // Move %b's node before %a's: %a is now read before it is defined.
  Node* a = g->nodes()[0].get();
  Node* b = g->nodes()[1].get();
  Node* moved = g->add_node(b->op, b->inputs, b->attrs, {b->outputs[0]->type}, a);
  g->replace_all_uses(b->outputs[0], moved->outputs[0]);
  ASSERT_TRUE(g->erase_node(b).ok());
  EXPECT_THAT(verify(*g).message(), HasSubstr("input 0 (%a) is not defined before this node"));
}

TEST(Verifier, WrongResultCount) {
  Graph g;
  ASSERT_TRUE(g.symbols().add({"T", 8}).ok());
  Value* x = g.add_input("x", {DType::kF32, {Dim::symbolic("T")}});
  Node* n = g.add_node(OpKind::kNeg, {x}, {}, {x->type, x->type});
  g.add_output("y", n->outputs[0]);
  EXPECT_THAT(verify(g).message(), HasSubstr("has 2 results, neg has 1"));
}

TEST(Verifier, UndeclaredSymbol) {
  Graph g;
  Value* x = g.add_input("x", {DType::kF32, {Dim::symbolic("T")}});
  g.add_output("y", x);
  EXPECT_THAT(verify(g).message(), HasSubstr("%x: type f32[T] uses undeclared symbol T"));
}

TEST(Verifier, NoOutputs) {
  auto g = parse_ok(std::string(kHead) + "}");
  EXPECT_EQ(verify(*g).message(), "graph has no outputs");
}

TEST(Verifier, OutputNotDefinedInTheGraph) {
  auto g = parse_ok(std::string(kHead) + "  %y = neg(%x) : f32[T,4]\n  output y = %y\n}");
  Graph other;
  Value* stray = other.add_input("stray", {DType::kF32, {}});
  g->set_output(0, stray);
  EXPECT_EQ(verify(*g).message(), "output y is not defined by any input, param or node");
}

TEST(Verifier, DuplicateNames) {
  Graph g;
  Value* x = g.add_input("x", {DType::kF32, {}});
  g.add_input("x", {DType::kF32, {}});
  g.add_output("y", x);
  EXPECT_EQ(verify(g).message(), "%x is declared twice");
  Graph h;
  Value* a = h.add_input("a", {DType::kF32, {}});
  h.add_output("y", a);
  h.add_output("y", a);
  EXPECT_EQ(verify(h).message(), "output y is declared twice");
}

TEST(Verifier, InvalidName) {
  Graph g;
  Value* x = g.add_input("bad name", {DType::kF32, {}});
  g.add_output("y", x);
  EXPECT_THAT(verify(g).message(), HasSubstr("invalid name 'bad name'"));
}

TEST(Graph, DeadNodesAreRemovedButSideEffectsStay) {
  auto g = parse_ok(
      "graph @g {\n  symbol T <= 8\n  symbol NP <= 4\n  input %x : f32[T,2,4]\n  input %slots : "
      "i32[T]\n"
      "  input %cache : f32[NP,16,2,4]\n  %dead = neg(%x) : f32[T,2,4]\n"
      "  %kc = kv_write(%cache, %x, %slots) : f32[NP,16,2,4]\n  %y = exp(%x) : f32[T,2,4]\n  "
      "output y = %y\n}");
  ASSERT_TRUE(verify(*g).ok()) << verify(*g);
  EXPECT_EQ(g->remove_dead_nodes(), 1);
  ASSERT_EQ(g->num_nodes(), 2);
  EXPECT_EQ(g->nodes()[0]->op, OpKind::kKvWrite);
  EXPECT_FALSE(g->erase_node(g->nodes()[1].get()).ok());  // %y is an output
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

TEST(Verifier, FusedElementwiseExpressionIsChecked) {
  auto ok = parse_graph(
      "graph @g {\n  input %a : f32[4]\n  input %b : f32[4]\n"
      "  %y = fused_elementwise(%a, %b) {dtype = f32, expr = \"mul(silu($0), $1)\"} : f32[4]\n"
      "  output y = %y\n}");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(verify(**ok).ok()) << verify(**ok);
  auto bad = parse_graph(
      "graph @g {\n  input %a : f32[4]\n  input %b : f32[4]\n"
      "  %y = fused_elementwise(%a, %b) {dtype = f32, expr = \"mul($0, $2)\"} : f32[4]\n"
      "  output y = %y\n}");
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_THAT(verify(**bad).message(), ::testing::HasSubstr("$2"));
  auto garbage = parse_graph(
      "graph @g {\n  input %a : f32[4]\n"
      "  %y = fused_elementwise(%a) {dtype = f32, expr = \"frob($0)\"} : f32[4]\n"
      "  output y = %y\n}");
  ASSERT_TRUE(garbage.ok());
  EXPECT_THAT(verify(**garbage).message(), ::testing::HasSubstr("expr:"));
}

// Derived params: parts share one axis and tile the param; a sharded param has one part list per
// rank; a collective spans every rank of the program.
TEST(Verifier, DerivedAndShardedParams) {
  auto err = [](const std::string& decls, const std::string& body = "") {
    auto g = parse_ok("graph @g {\n" + decls + "  symbol T <= 8\n  input %x : f32[T,4]\n" + body +
                      "  output x = %x\n}");
    return std::string(verify(*g).message());
  };
  EXPECT_EQ(err("  param @w : f32[3,4] = rows(\"a\"[0:1], \"b\"[0:2])\n"), "");
  EXPECT_EQ(err("  param @w : f32[3,4] = cols(\"a\"[0:4])\n"), "");
  EXPECT_THAT(err("  param @w : f32[3,4] = cols(\"a\"[0:3])\n"),
              HasSubstr("@w: its parts hold 3 cols but its type is f32[3,4]"));
  EXPECT_THAT(err("  param @w : f32[4] = cols(\"a\"[0:4])\n"),
              HasSubstr("@w: column parts make a matrix, but its type is f32[4]"));
  EXPECT_THAT(err("  param @w : f32[3,4] = shards(rows(\"a\"[0:3]), rows(\"a\"[3:6]))\n"),
              HasSubstr("@w has 2 shards but the graph runs on 1 rank(s)"));
  EXPECT_EQ(err("  ranks 2\n  param @w : f32[3,4] = shards(rows(\"a\"[0:3]), rows(\"a\"[3:6]))\n"),
            "");
  EXPECT_THAT(
      err("  ranks 3\n  param @w : f32[3,4] = shards(rows(\"a\"[0:3]), rows(\"a\"[3:6]))\n"),
      HasSubstr("@w has 2 shards but the graph runs on 3 rank(s)"));
  EXPECT_THAT(
      err("  ranks 2\n  param @w : f32[3,4] = shards(rows(\"a\"[0:3]), cols(\"a\"[0:3]))\n"),
      HasSubstr("@w (rank 1): its parts hold 3 cols but its type is f32[3,4]"));
  EXPECT_THAT(err("  ranks 2\n", "  %s = all_reduce(%x) {ranks = 4} : f32[T,4]\n"),
              HasSubstr("spans 4 ranks but the graph runs on 2"));
  EXPECT_EQ(err("  ranks 2\n", "  %s = all_reduce(%x) {ranks = 2} : f32[T,4]\n"), "");
}

TEST(Verifier, MixedAxesInOneParam) {
  Graph g;
  g.symbols().add({"T", 8}).IgnoreError();
  Value* x = g.add_input("x", {DType::kF32, {Dim::symbolic("T"), Dim::constant(4)}});
  g.add_param("w", {DType::kF32, {Dim::constant(3), Dim::constant(4)}},
              {{"a", SliceAxis::kRows, 0, 2}, {"b", SliceAxis::kCols, 0, 4}});
  g.add_output("x", x);
  EXPECT_THAT(verify(g).message(), HasSubstr("@w: its parts mix rows and columns"));
}

}  // namespace
}  // namespace kiln
