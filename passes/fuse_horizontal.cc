// fuse-horizontal: matmuls that read the same activation with different weights (Q/K/V, gate/up)
// become one matmul over the weights stacked along the output-feature axis, followed by slices
// of its result. One GEMM streams the activation once and fills the GPU better than three small
// ones (and is one launch, not three); on the reference backend the result is bit-identical (each
// output column is the same dot product).
//
// The stacked weight is a derived param (ir/graph.h ParamPart): `param @blk.0.attn_q_attn_k_
// attn_v.weight : bf16[N, K] = rows("blk.0.attn_q.weight"[0:Nq], ...)`. It is a compile-time
// constant that the IR names exactly, and the runtimes assemble it from the checkpoint's rows
// when they load the weights (plan/weight_parts.h), so the plan copies no bytes; the members'
// own params go away with their matmuls. Only weights stored in one format are stacked (the
// PassContext's weight_dtypes, when known), so that a derived weight is one run of blocks.
//
// Qwen2's q/k/v biases merge with their weights: when every member's result is read only by
// `add(·, @bias[N])`, one `add(merged, @merged_bias)` follows the merged matmul (which
// gemm-epilogue folds into the GEMM) and the slices replace the adds.
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
  // Stacking adds rows; a weight made of column slices (a row-parallel shard) has no rows of a
  // checkpoint tensor to name.
  for (int r = 0; r < std::max<int>(1, static_cast<int>(w->rank_parts.size())); ++r) {
    const std::vector<ParamPart>& parts = w->parts_of_rank(r);
    if (!parts.empty() && parts[0].axis != SliceAxis::kRows) return "weight is a column slice";
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

/// The checkpoint rows `param` stands for on tensor-parallel rank `rank`: its parts, or all rows
/// of the tensor it names.
std::vector<ParamPart> rows_of(const Value& param, int rank) {
  const std::vector<ParamPart>& parts = param.parts_of_rank(rank);
  if (!parts.empty()) return parts;
  return {{param.name, SliceAxis::kRows, 0, param.type.shape[0].value}};
}

/// The stored format of `param` when the caller said (PassContext::weight_dtypes), else its IR
/// dtype; a derived param's is its first part's (its parts share one by construction).
DType storage_dtype(const Value& param, const PassContext& context) {
  const std::vector<ParamPart>& parts = param.parts_of_rank(0);
  const std::string& source = parts.empty() ? param.name : parts[0].source;
  auto it = context.weight_dtypes.find(source);
  return it == context.weight_dtypes.end() ? param.type.dtype : it->second;
}

/// "blk.0.attn_q_attn_k_attn_v.weight" from blk.0.attn_{q,k,v}.weight: the members' common
/// prefix and suffix (cut at '.') around their differing middles; a fresh name in `g`.
std::string merged_name(absl::flat_hash_set<std::string>& taken,
                        const std::vector<const Value*>& members) {
  std::string_view first = members[0]->name;
  size_t prefix = first.size(), suffix = first.size();
  for (const Value* m : members) {
    std::string_view n = m->name;
    size_t p = 0;
    while (p < prefix && p < n.size() && n[p] == first[p]) ++p;
    prefix = p;
    size_t q = 0;
    while (q < suffix && q < n.size() && n[n.size() - 1 - q] == first[first.size() - 1 - q]) ++q;
    suffix = q;
  }
  // Whole dot-separated components only, and the middles must not overlap.
  while (prefix > 0 && first[prefix - 1] != '.') --prefix;
  while (suffix > 0 && first[first.size() - suffix] != '.') --suffix;
  std::vector<std::string> middles;
  for (const Value* m : members) {
    std::string_view n = m->name;
    if (prefix + suffix > n.size()) {
      prefix = suffix = 0;
      middles.clear();
      break;
    }
    middles.emplace_back(n.substr(prefix, n.size() - prefix - suffix));
  }
  if (middles.empty()) {
    for (const Value* m : members) middles.push_back(m->name);
  }
  std::string name = std::string(first.substr(0, prefix)) + absl::StrJoin(middles, "_") +
                     std::string(first.substr(first.size() - suffix));
  while (!taken.insert(name).second) name += "_merged";
  return name;
}

/// A derived param stacking `members`' rows (all rank-2 [n_i, K] or all rank-1 [n_i]); in a
/// tensor-parallel graph with a sharded member, one stack per rank of that rank's rows.
Value* stack_params(Graph& g, absl::flat_hash_set<std::string>& taken,
                    const std::vector<const Value*>& members) {
  bool sharded = false;
  for (const Value* m : members) sharded |= m->sharded();
  const int ranks = sharded ? g.ranks() : 1;
  std::vector<std::vector<ParamPart>> stacks(ranks);
  int64_t rows = 0;
  for (int r = 0; r < ranks; ++r) {
    rows = 0;
    for (const Value* m : members) {
      for (ParamPart& p : rows_of(*m, r)) {
        rows += p.end - p.begin;
        stacks[r].push_back(std::move(p));
      }
    }
  }
  Type t = members[0]->type;
  t.shape[0] = Dim::constant(rows);  // the same on every rank: each member's rows are
  if (sharded)
    return g.add_sharded_param(merged_name(taken, members), std::move(t), std::move(stacks));
  return g.add_param(merged_name(taken, members), std::move(t), std::move(stacks[0]));
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
      auto key = std::make_tuple(n->inputs[0], storage_dtype(*w, context), w->type.shape[1].value);
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
    if (changed) {
      graph.remove_dead_nodes();
      // The members' params, now unread (a tied weight read elsewhere stays).
      graph.erase_unread_params([&](const Value* p) { return stacked_.contains(p); });
    }
    stacked_.clear();
    names_.clear();
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
    // Biases stack only when stored alike too.
    for (const Member& m : members) {
      if (all_biased && storage_dtype(*m.bias, context) != storage_dtype(*members[0].bias, context)) {
        all_biased = false;
      }
    }
    // Every member's result must be a matmul of x; they sit after x, so inserting the merged
    // matmul before the first member places it after x and before every reader.
    Node* first = group.front();
    Value* x = first->inputs[0];
    std::vector<const Value*> weights, biases;
    for (const Member& m : members) {
      weights.push_back(m.matmul->inputs[1]);
      if (all_biased) biases.push_back(m.bias);
    }
    for (const Value* v : weights) stacked_.insert(v);
    for (const Value* v : biases) stacked_.insert(v);
    if (names_.empty()) {
      for (const Value* p : g.params()) names_.insert(p->name);
    }
    Value* w = stack_params(g, names_, weights);
    absl::StatusOr<Value*> y = add_before(g, first, OpKind::kMatmul, {x, w}, {});
    if (!y.ok()) return y.status();
    if (all_biased) {
      Value* b = stack_params(g, names_, biases);
      y = add_before(g, first, OpKind::kAdd, {*y, b}, {});
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

  absl::flat_hash_set<const Value*> stacked_;  // params a derived param replaced in this run
  absl::flat_hash_set<std::string> names_;     // every param's name, for fresh merged names
};

}  // namespace

std::unique_ptr<Pass> make_fuse_horizontal_pass() { return std::make_unique<FuseHorizontal>(); }

}  // namespace kiln
