// Shared helpers of the fusion passes: matching producers and single-use legality, and replacing
// a matched pattern with one fused node.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "passes/pass.h"

namespace kiln {

/// The outcome of a pattern's `match`: either the match or why there is none. Reasons are short
/// sentences a user reads in `kiln ir --stats` and in "does not fuse" tests.
template <typename M>
struct MatchResult {
  std::optional<M> match;
  std::string reason;  // set when `match` is empty

  static MatchResult fail(std::string why) { return MatchResult{std::nullopt, std::move(why)}; }
  static MatchResult ok(M m) { return MatchResult{std::move(m), ""}; }
  explicit operator bool() const { return match.has_value(); }
};

/// The node producing `v` if it is a node result of kind `op`, else nullptr.
Node* producer_of(const Value* v, OpKind op);

/// The value of a rank-0 `constant` node, or nullopt for anything else.
std::optional<double> scalar_constant(const Value* v);

/// True when every read of `v` (node inputs and graph outputs) is by one of `allowed`.
bool only_used_by(const Graph& graph, const Value* v, const std::vector<const Node*>& allowed);

/// For a commutative binary node: the operand that is not `one` (nullptr when `one` is neither).
Value* other_operand(const Node* binary, const Value* one);

/// The fused node that replaces a pattern: its op, inputs, attributes; the pattern values its
/// results replace (nullptr for a result nothing needs); and the pattern's nodes to erase.
struct FusedReplacement {
  OpKind op = OpKind::kConstant;
  std::vector<Value*> inputs;
  Attributes attrs;
  std::vector<Value*> replaces;
  std::vector<Node*> erase;
};

/// Why `r` cannot be placed, or "" when it can: the fused node takes the place of the pattern's
/// first node after its last-defined input, so every outside reader of a replaced value must
/// come after that point.
std::string placement_problem(const Graph& graph, const FusedReplacement& r);

/// Infers the fused node's result types, inserts it where placement_problem says, rewires
/// the replaced values' readers to its results and erases the pattern's nodes. Call
/// placement_problem first; an error here is an internal bug of the pattern.
absl::StatusOr<Node*> apply_replacement(Graph& graph, const FusedReplacement& r);

/// True for an `add` that gemm-epilogue folds into the matmul feeding it: a single-use matmul
/// result plus a bias vector [N] or a residual of the product's type. fuse-elementwise leaves
/// these adds alone so that the GEMM's epilogue, not a separate kernel, performs them.
bool is_gemm_epilogue_add(const Graph& graph, const Node& add);

/// The loop every anchored fusion runs: try `Pattern` at each node of kind `anchor` (collected
/// before rewriting, so rewrites cannot disturb the walk); count each reason a match or placement
/// fails as "not fused: <reason>" and each success under `counter(replacement)`; remove the dead
/// nodes once at the end. Returns whether anything was fused.
template <class Pattern, class Counter>
absl::StatusOr<bool> fuse_at_anchors(Graph& graph, PassContext& context, const std::string& pass,
                                     OpKind anchor, Counter counter) {
  std::vector<Node*> anchors;
  for (const auto& n : graph.nodes()) {
    if (n->op == anchor) anchors.push_back(n.get());
  }
  bool changed = false;
  for (Node* at : anchors) {
    auto m = Pattern::match(graph, at);
    if (!m) {
      context.count(pass, "not fused: " + m.reason);
      continue;
    }
    FusedReplacement r = Pattern::rewrite(*m.match);
    if (std::string why = placement_problem(graph, r); !why.empty()) {
      context.count(pass, "not fused: " + why);
      continue;
    }
    absl::StatusOr<Node*> fused = apply_replacement(graph, r);
    if (!fused.ok()) return fused.status();
    context.count(pass, counter(r));
    changed = true;
  }
  if (changed) graph.remove_dead_nodes();
  return changed;
}

}  // namespace kiln
