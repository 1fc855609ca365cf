// fuse-horizontal: matmuls that read the same activation with different weights (Q/K/V, gate/up)
// become one matmul over the weights concatenated along the output-feature axis, followed by
// slices of its result. One GEMM streams the activation once and fills the GPU better than three
// small ones; on the reference backend the result is bit-identical (each output column is the
// same dot product).
//
// The concatenation is `concat(@w0, @w1, ...){axis = 0}` of params only: a compile-time constant.
// It stays in the IR so that the IR alone says what the merged weight is (the reference executor
// runs it as it runs any concat); a lowering folds it into a weight built from slices of the
// checkpoint's tensors (plan/plan.h PlanWeight::parts) instead of copying bytes into the plan.
//
// Qwen2's q/k/v biases merge with their weights: when every member's result is read only by
// `add(·, @bias[N])`, one `add(merged, concat(@b0, @b1, ...))` follows the merged matmul (which
// gemm-epilogue folds into the GEMM) and the slices replace the adds.
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ir/type_inference.h"
#include "passes/pass.h"
#include "passes/pass_registry.h"
#include "passes/rewrite.h"

namespace kiln {
namespace {

/// One matmul of a group: its node, the weight's output features, and its bias add (if any).
struct Member {
  Node* matmul = nullptr;
  int64_t n = 0;
  Node* bias_add = nullptr;
  Value* bias = nullptr;
};

/// Why `matmul` cannot join a horizontal group, or "" when it can: the weight must be a rank-2
/// param with constant dims (a compile-time concatenation needs fixed sizes).
std::string member_problem(const Node& matmul) {
  if (matmul.inputs.size() != 2) return "matmul without two operands";
  const Value* w = matmul.inputs[1];
  if (w->kind != ValueKind::kParam) return "weight is not a param";
  if (w->type.rank() != 2 || w->type.shape[0].is_symbolic() || w->type.shape[1].is_symbolic()) {
    return "weight is not a constant-shape matrix";
  }
  return "";
}

/// The `add(result, @bias[N])` that is the sole reader of the matmul's result, or nullptr.
Node* bias_add_of(const Graph& g, const Node& matmul, Value** bias) {
  const Value* out = matmul.outputs[0];
  std::vector<Node*> users = g.users(out);
  if (users.size() != 1 || users[0]->op != OpKind::kAdd || !only_used_by(g, out, {users[0]})) {
    return nullptr;
  }
  Value* other = other_operand(users[0], out);
  if (other == nullptr || other == out || other->kind != ValueKind::kParam ||
      other->type.rank() != 1 || other->type.dtype != out->type.dtype ||
      !(other->type.shape[0] == out->type.shape.back())) {
    return nullptr;
  }
  *bias = other;
  return users[0];
}

absl::StatusOr<Value*> add_before(Graph& g, Node* before, OpKind op, std::vector<Value*> inputs,
                                  Attributes attrs) {
  std::vector<Type> types;
  for (const Value* v : inputs) types.push_back(v->type);
  absl::StatusOr<std::vector<Type>> out = infer_types(op, types, attrs, g.symbols());
  if (!out.ok()) {
    return absl::InternalError(
        absl::StrCat("fuse-horizontal built an ill-typed ", op_name(op), ": ", out.status().message()));
  }
  return g.add_node(op, std::move(inputs), std::move(attrs), *out, before)->outputs[0];
}

class FuseHorizontal : public Pass {
 public:
  std::string name() const override { return "fuse-horizontal"; }
  std::string description() const override {
    return "matmuls sharing an input (q/k/v, gate/up) -> one matmul over concatenated weights + "
           "slices";
  }

  absl::StatusOr<bool> run(Graph& graph, PassContext& context) override {
    // Groups keyed by the shared activation and the weights' dtype and contraction size, in
    // program order of their first matmul.
    std::vector<std::vector<Node*>> groups;
    std::map<std::tuple<const Value*, DType, int64_t>, size_t> index;
    for (const auto& n : graph.nodes()) {
      if (n->op != OpKind::kMatmul) continue;
      if (std::string why = member_problem(*n); !why.empty()) {
        context.count(name(), "not merged: " + why);
        continue;
      }
      const Value* w = n->inputs[1];
      auto key = std::make_tuple(n->inputs[0], w->type.dtype, w->type.shape[1].value);
      auto [it, fresh] = index.emplace(key, groups.size());
      if (fresh) groups.emplace_back();
      groups[it->second].push_back(n.get());
    }
    bool changed = false;
    for (const std::vector<Node*>& group : groups) {
      if (group.size() < 2) continue;
      absl::StatusOr<bool> merged = merge(graph, group, context);
      if (!merged.ok()) return merged.status();
      changed |= *merged;
    }
    if (changed) graph.remove_dead_nodes();
    return changed;
  }

 private:
  absl::StatusOr<bool> merge(Graph& g, const std::vector<Node*>& group, PassContext& context) {
    std::vector<Member> members;
    bool all_biased = true;
    for (Node* m : group) {
      Member& mem = members.emplace_back();
      mem.matmul = m;
      mem.n = m->inputs[1]->type.shape[0].value;
      mem.bias_add = bias_add_of(g, *m, &mem.bias);
      all_biased &= mem.bias_add != nullptr;
    }
    // Every member's result must be a matmul of x; they sit after x, so inserting the merged
    // matmul before the first member places it after x and before every reader.
    Node* first = group.front();
    Value* x = first->inputs[0];
    std::vector<Value*> weights, biases;
    for (const Member& m : members) {
      weights.push_back(m.matmul->inputs[1]);
      if (all_biased) biases.push_back(m.bias);
    }
    Attributes axis0;
    axis0.set("axis", int64_t{0});
    absl::StatusOr<Value*> w = add_before(g, first, OpKind::kConcat, weights, axis0);
    if (!w.ok()) return w.status();
    absl::StatusOr<Value*> y = add_before(g, first, OpKind::kMatmul, {x, *w}, {});
    if (!y.ok()) return y.status();
    if (all_biased) {
      absl::StatusOr<Value*> b = add_before(g, first, OpKind::kConcat, biases, axis0);
      if (!b.ok()) return b.status();
      y = add_before(g, first, OpKind::kAdd, {*y, *b}, {});
      if (!y.ok()) return y.status();
      context.count(name(), "biases merged", static_cast<int64_t>(members.size()));
    }
    const int64_t axis = static_cast<int64_t>((*y)->type.rank()) - 1;
    int64_t start = 0;
    for (const Member& m : members) {
      Attributes a;
      a.set("axis", axis);
      a.set("start", start);
      a.set("end", start + m.n);
      start += m.n;
      absl::StatusOr<Value*> s = add_before(g, first, OpKind::kSlice, {*y}, a);
      if (!s.ok()) return s.status();
      g.replace_all_uses(all_biased ? m.bias_add->outputs[0] : m.matmul->outputs[0], *s);
    }
    context.count(name(), absl::StrCat("merged ", members.size(), " matmuls"));
    context.count(name(), "matmuls merged", static_cast<int64_t>(members.size()));
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_horizontal_pass() { return std::make_unique<FuseHorizontal>(); }

}  // namespace kiln
