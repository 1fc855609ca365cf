// The Graph's use-lists and program order stay exact under every mutation the passes perform
// (append, insert before, set_input, replace_all_uses, erase, remove_dead_nodes, outputs),
// checked against a brute-force scan of the nodes after each step.
#include "ir/graph.h"

#include <algorithm>
#include <random>

#include <gtest/gtest.h>

namespace kiln {
namespace {

const Type kType{DType::kF32, {Dim::constant(4)}};

// users() and use_count() as the old linear scans computed them.
std::vector<Node*> scan_users(const Graph& g, const Value* v) {
  std::vector<Node*> out;
  for (const auto& n : g.nodes()) {
    if (std::find(n->inputs.begin(), n->inputs.end(), v) != n->inputs.end()) out.push_back(n.get());
  }
  return out;
}

int scan_use_count(const Graph& g, const Value* v) {
  int count = 0;
  for (const auto& n : g.nodes())
    count += static_cast<int>(std::count(n->inputs.begin(), n->inputs.end(), v));
  for (const GraphOutput& o : g.outputs()) count += o.value == v ? 1 : 0;
  return count;
}

// Every value reachable from the graph: inputs and every node's results and operands.
std::vector<const Value*> all_values(const Graph& g) {
  std::vector<const Value*> out(g.inputs().begin(), g.inputs().end());
  for (const auto& n : g.nodes()) {
    out.insert(out.end(), n->outputs.begin(), n->outputs.end());
  }
  return out;
}

void expect_consistent(const Graph& g, const std::vector<const Value*>& values) {
  const auto& nodes = g.nodes();
  ASSERT_EQ(static_cast<int>(nodes.size()), g.num_nodes());
  const Node* walk = g.first_node();
  for (size_t i = 0; i < nodes.size(); ++i) {
    ASSERT_EQ(walk, nodes[i].get()) << "list and vector disagree at " << i;
    EXPECT_EQ(g.index_of(nodes[i].get()), static_cast<int>(i));
    if (i > 0) {
      EXPECT_TRUE(g.is_before(nodes[i - 1].get(), nodes[i].get()));
      EXPECT_FALSE(g.is_before(nodes[i].get(), nodes[i - 1].get()));
    }
    walk = g.next(walk);
  }
  EXPECT_EQ(walk, nullptr);
  for (const Value* v : values) {
    EXPECT_EQ(g.users(v), scan_users(g, v)) << "value " << v->id;
    EXPECT_EQ(g.use_count(v), scan_use_count(g, v)) << "value " << v->id;
  }
}

TEST(Graph, UseListsFollowEachMutation) {
  Graph g;
  Value* x = g.add_input("x", kType);
  Value* y = g.add_input("y", kType);
  Node* a = g.add_node(OpKind::kAdd, {x, y}, {}, {kType});
  Node* b = g.add_node(OpKind::kMul, {a->output(), a->output()}, {}, {kType});  // reads a twice
  Node* c = g.add_node(OpKind::kNeg, {b->output()}, {}, {kType});
  g.add_output("out", c->output());
  g.add_output("also", a->output());
  std::vector<const Value*> values = {x, y, a->output(), b->output(), c->output()};
  expect_consistent(g, values);
  EXPECT_EQ(g.users(a->output()), std::vector<Node*>{b});
  EXPECT_EQ(g.use_count(a->output()), 3);  // twice by b, once by an output

  // Insert in the middle; the new node reads x and feeds c.
  Node* d = g.add_node(OpKind::kExp, {x}, {}, {kType}, c);
  values.push_back(d->output());
  g.set_input(c, 0, d->output());
  expect_consistent(g, values);
  EXPECT_TRUE(g.is_before(b, d));
  EXPECT_TRUE(g.is_before(d, c));
  EXPECT_EQ(g.users(x), (std::vector<Node*>{a, d}));

  // b is now unused: erase it; a's reads drop to the output alone.
  const Value* b_out = b->output();
  ASSERT_TRUE(g.erase_node(b).ok());
  values.erase(std::find(values.begin(), values.end(), b_out));
  expect_consistent(g, values);
  EXPECT_EQ(g.use_count(a->output()), 1);

  // Replace every read of a (the output) with d, then a is dead.
  const Value* a_out = a->output();
  g.replace_all_uses(a_out, d->output());
  expect_consistent(g, values);
  EXPECT_EQ(g.outputs()[1].value, d->output());
  EXPECT_EQ(g.use_count(a_out), 0);
  EXPECT_EQ(g.remove_dead_nodes(), 1);
  values.erase(std::find(values.begin(), values.end(), a_out));
  expect_consistent(g, values);
  EXPECT_FALSE(g.erase_node(d).ok());  // still read by c and an output
  g.set_output(0, d->output());
  EXPECT_EQ(g.use_count(c->output()), 0);
  EXPECT_EQ(g.use_count(d->output()), 3);
  expect_consistent(g, values);
}

TEST(Graph, IndexOfANodeOfAnotherGraphIsMinusOne) {
  Graph g, other;
  Value* x = g.add_input("x", kType);
  Node* n = g.add_node(OpKind::kNeg, {x}, {}, {kType});
  EXPECT_EQ(other.index_of(n), -1);
  EXPECT_EQ(other.erase_node(n).code(), absl::StatusCode::kNotFound);
}

// Random fusion-like rewrites: insert a node before a random node reading random earlier
// values, rewire a random later reader to it, erase whatever became dead.
TEST(Graph, RandomRewritesKeepUseListsAndOrderExact) {
  std::mt19937 rng(7);
  Graph g;
  Value* x = g.add_input("x", kType);
  std::vector<Node*> chain;
  Value* prev = x;
  for (int i = 0; i < 40; ++i) {
    chain.push_back(g.add_node(OpKind::kAdd, {prev, x}, {}, {kType}));
    prev = chain.back()->output();
  }
  g.add_output("out", prev);
  for (int step = 0; step < 400; ++step) {
    const auto& nodes = g.nodes();
    const int at = std::uniform_int_distribution<int>(1, g.num_nodes() - 1)(rng);
    Node* before = step % 5 == 0 ? nodes[1].get() : nodes[at].get();  // hammer one spot
    Value* source =
        nodes[std::uniform_int_distribution<int>(0, g.index_of(before) - 1)(rng)]->output();
    Node* fresh = g.add_node(OpKind::kNeg, {source}, {}, {kType}, before);
    // Rewire one operand of `before` or a later node to the new value.
    const auto& now = g.nodes();
    const int reader =
        std::uniform_int_distribution<int>(g.index_of(before), g.num_nodes() - 1)(rng);
    g.set_input(now[reader].get(), 0, fresh->output());
    if (step % 7 == 0) g.replace_all_uses(source, fresh->output());
    if (step % 3 == 0) g.remove_dead_nodes();
    ASSERT_NO_FATAL_FAILURE(expect_consistent(g, all_values(g)));
  }
}

// Inserting again and again right before one node halves the order keys' gap each time; once it
// runs out the keys are renumbered and the order stays exact.
TEST(Graph, RepeatedInsertsAtOneSpotRenumber) {
  Graph g;
  Value* x = g.add_input("x", kType);
  Node* first = g.add_node(OpKind::kNeg, {x}, {}, {kType});
  Node* last = g.add_node(OpKind::kNeg, {first->output()}, {}, {kType});
  g.add_output("out", last->output());
  std::vector<Node*> inserted;
  for (int i = 0; i < 100; ++i)
    inserted.push_back(g.add_node(OpKind::kExp, {x}, {}, {kType}, last));
  EXPECT_GT(g.stats().renumbers, 0);
  ASSERT_EQ(g.num_nodes(), 102);
  EXPECT_EQ(g.nodes().front().get(), first);
  EXPECT_EQ(g.nodes().back().get(), last);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(g.index_of(inserted[i]), i + 1);
  ASSERT_NO_FATAL_FAILURE(expect_consistent(g, all_values(g)));
}

}  // namespace
}  // namespace kiln
