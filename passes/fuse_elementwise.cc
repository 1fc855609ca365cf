// fuse-elementwise: chains of primitive elementwise ops into fused_elementwise nodes holding an
// expression over their inputs (the language of ir/expr.h).
#include <algorithm>
#include <charconv>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ir/expr.h"
#include "ir/type_inference.h"
#include "passes/pass.h"
#include "passes/pass_registry.h"
#include "passes/rewrite.h"

namespace kiln {
namespace {

// Most call nodes in one generated expression, counting a shared subexpression once per use.
constexpr int64_t kMaxExprNodes = 4096;

bool is_candidate(const Graph& g, const Node& n) {
  switch (n.op) {
    case OpKind::kAdd: return !is_gemm_epilogue_add(g, n);
    case OpKind::kSub:
    case OpKind::kMul:
    case OpKind::kDiv:
    case OpKind::kNeg:
    case OpKind::kExp:
    case OpKind::kRsqrt:
    case OpKind::kSilu: return true;
    case OpKind::kCast:
      // Float-to-float only: the expression computes in fp32 and stores in `dtype`.
      return is_float(n.inputs[0]->type.dtype) && is_float(n.output()->type.dtype);
    default: return false;
  }
}

std::string literal(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, end);
}

/// One group of elementwise nodes: a root and the producers it absorbs, each of whose results is
/// read only inside the group.
struct ElementwiseMatch {
  Node* root;
  std::vector<Node*> nodes;
  std::vector<Value*> inputs;  // external values, in order of first appearance ($0, $1, ...)
  std::string expr;
};

struct ElementwisePattern {
  static MatchResult<ElementwiseMatch> match(const Graph& g, Node* root,
                                             const std::set<const Node*>& claimed) {
    using R = MatchResult<ElementwiseMatch>;
    ElementwiseMatch m{};
    m.root = root;
    // Grow to the fixpoint: a producer joins once all of its result's reads are by group nodes.
    // A worklist counts the group's reads of each value, so the growth is O(group x operands);
    // reads only grow, so the fixpoint is the same whatever the order. Two caps keep the
    // expression valid and small (the only order-dependent part, deterministic): its nesting
    // (each node one level below its deepest reader, every level counted so that emit()'s
    // recursion is bounded too) stays within kMaxExprDepth, and its size with shared
    // subexpressions repeated (emit() writes a node once per path from the root) within
    // kMaxExprNodes.
    std::set<Node*> group = {root};
    std::unordered_map<const Value*, int> reads;      // reads of a value by group nodes
    std::unordered_map<const Node*, int> level;       // a group node's nesting depth
    std::unordered_map<const Value*, int64_t> paths;  // paths from the root to a value's read
    level[root] = 0;
    int64_t expr_nodes = 1;
    std::vector<Node*> work = {root};
    while (!work.empty()) {
      Node* n = work.back();
      work.pop_back();
      const int64_t n_paths = n == root ? 1 : paths[n->output()];
      for (const Value* in : n->inputs) {
        ++reads[in];
        paths[in] = std::min(paths[in] + n_paths, kMaxExprNodes + 1);
        Node* p = in->kind == ValueKind::kResult ? in->producer : nullptr;
        if (p == nullptr || group.count(p) || claimed.count(p) || !is_candidate(g, *p)) continue;
        if (reads[in] != g.use_count(in)) continue;  // read outside the group (or an output)
        int depth = 0;
        for (const Node* reader : g.users(in)) depth = std::max(depth, level[reader] + 1);
        if (depth + 1 > kMaxExprDepth || expr_nodes + paths[in] > kMaxExprNodes) continue;
        group.insert(p);
        level[p] = depth;
        expr_nodes += paths[in];
        work.push_back(p);
      }
    }
    m.nodes.assign(group.begin(), group.end());
    std::map<const Value*, int> index;
    m.expr = emit(root->output(), group, index, m.inputs);
    if (m.inputs.empty()) return R::fail("the chain has no tensor input (constants only)");
    std::vector<Type> types;
    for (const Value* v : m.inputs) types.push_back(v->type);
    Attributes attrs;
    attrs.set("expr", m.expr);
    attrs.set("dtype", root->output()->type.dtype);
    absl::StatusOr<std::vector<Type>> t =
        infer_types(OpKind::kFusedElementwise, types, attrs, g.symbols());
    if (!t.ok() || !((*t)[0] == root->output()->type)) {
      return R::fail("the inputs do not broadcast to the chain's result shape");
    }
    if (absl::Status s = validate_expr(m.expr, static_cast<int>(m.inputs.size())); !s.ok()) {
      return R::fail(absl::StrCat("generated expression is invalid: ", s.message()));
    }
    return R::ok(m);
  }

  // The expression text of `v` within the group (shared subexpressions are repeated).
  static std::string emit(const Value* v, const std::set<Node*>& group,
                          std::map<const Value*, int>& index, std::vector<Value*>& inputs) {
    Node* p = v->kind == ValueKind::kResult ? v->producer : nullptr;
    if (p == nullptr || !group.count(p)) {
      if (std::optional<double> c = scalar_constant(v)) return literal(*c);
      auto [it, inserted] = index.emplace(v, static_cast<int>(inputs.size()));
      if (inserted) inputs.push_back(const_cast<Value*>(v));
      return absl::StrCat("$", it->second);
    }
    if (p->op == OpKind::kCast) return emit(p->inputs[0], group, index, inputs);
    std::string out = absl::StrCat(op_name(p->op), "(");
    for (size_t i = 0; i < p->inputs.size(); ++i) {
      absl::StrAppend(&out, i ? ", " : "", emit(p->inputs[i], group, index, inputs));
    }
    return out + ")";
  }

  static FusedReplacement rewrite(const ElementwiseMatch& m) {
    FusedReplacement r;
    r.op = OpKind::kFusedElementwise;
    r.inputs = m.inputs;
    r.attrs.set("expr", m.expr);
    r.attrs.set("dtype", m.root->output()->type.dtype);
    r.replaces = {m.root->output()};
    r.erase = m.nodes;
    return r;
  }
};

/// Fuses what elementwise arithmetic the other fusions left (SwiGLU's silu(g) * u, casts, bias
/// adds without a GEMM to take them) into `fused_elementwise(x0..xn){expr, dtype}`, one node per
/// maximal group whose intermediates are read only inside it; scalar constants become literals
/// and float casts vanish into the fp32 evaluation (the result is stored in `dtype`). Single
/// ops are converted too, so codegen has one elementwise path. Runs after the pattern fusions
/// (which need the primitive arithmetic) and before gemm-epilogue; adds that gemm-epilogue folds
/// into a GEMM (is_gemm_epilogue_add) are left for it.
class FuseElementwise : public Pass {
 public:
  std::string name() const override { return "fuse-elementwise"; }
  std::string description() const override {
    return "remaining elementwise chains -> fused_elementwise (expression DAG)";
  }

  absl::StatusOr<bool> run(Graph& graph, PassContext& context) override {
    bool changed = false;
    std::set<const Node*> claimed;
    // Roots are taken from the end, so each group is as large as its readers allow.
    std::vector<Node*> order;
    for (const auto& n : graph.nodes()) order.push_back(n.get());
    std::set<const Node*> erased;
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
      Node* root = *it;
      if (erased.count(root) || !is_candidate(graph, *root)) continue;
      MatchResult<ElementwiseMatch> m = ElementwisePattern::match(graph, root, claimed);
      if (!m) {
        context.count(name(), "not fused: " + m.reason);
        claimed.insert(root);
        continue;
      }
      FusedReplacement r = ElementwisePattern::rewrite(*m.match);
      if (std::string why = placement_problem(graph, r); !why.empty()) {
        context.count(name(), "not fused: " + why);
        claimed.insert(root);
        continue;
      }
      absl::StatusOr<Node*> fused = apply_replacement(graph, r);
      if (!fused.ok()) return fused.status();
      erased.insert(m.match->nodes.begin(), m.match->nodes.end());
      context.count(name(), "fused");
      context.count(name(), "ops", static_cast<int64_t>(m.match->nodes.size()));
      changed = true;
    }
    if (changed) graph.remove_dead_nodes();
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_elementwise_pass() { return std::make_unique<FuseElementwise>(); }

}  // namespace kiln
