// Shared helpers of the fusion passes (see rewrite.h).
#include "passes/rewrite.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "ir/printer.h"
#include "ir/type_inference.h"

namespace kiln {

Node* producer_of(const Value* v, OpKind op) {
  if (v == nullptr || v->kind != ValueKind::kResult || v->producer == nullptr) return nullptr;
  return v->producer->op == op ? v->producer : nullptr;
}

std::optional<double> scalar_constant(const Value* v) {
  Node* c = producer_of(v, OpKind::kConstant);
  if (c == nullptr || v->type.rank() != 0) return std::nullopt;
  absl::StatusOr<double> value = c->attrs.get_float("value");
  if (!value.ok()) return std::nullopt;
  return *value;
}

bool only_used_by(const Graph& graph, const Value* v, const std::vector<const Node*>& allowed) {
  for (const GraphOutput& o : graph.outputs()) {
    if (o.value == v) return false;
  }
  for (const Node* user : graph.users(v)) {
    if (std::find(allowed.begin(), allowed.end(), user) == allowed.end()) return false;
  }
  return true;
}

Value* other_operand(const Node* binary, const Value* one) {
  if (binary->inputs.size() != 2) return nullptr;
  if (binary->inputs[0] == one) return binary->inputs[1];
  if (binary->inputs[1] == one) return binary->inputs[0];
  return nullptr;
}

namespace {

// The node before which the fused node goes (nullptr: the end): where the pattern's first node
// after the last-defined input was, so fused nodes keep the order of the patterns they replace.
// O(inputs + pattern nodes), through the graph's O(1) order comparisons.
Node* insertion_point(const Graph& graph, const FusedReplacement& r) {
  const Node* last_input = nullptr;  // the latest producer of an input
  for (const Value* in : r.inputs) {
    if (in->kind == ValueKind::kResult &&
        (last_input == nullptr || graph.is_before(last_input, in->producer))) {
      last_input = in->producer;
    }
  }
  Node* at = nullptr;
  for (Node* n : r.erase) {
    if ((last_input == nullptr || graph.is_before(last_input, n)) &&
        (at == nullptr || graph.is_before(n, at))) {
      at = n;
    }
  }
  if (at != nullptr) return at;
  return last_input != nullptr ? graph.next(last_input) : graph.first_node();
}

}  // namespace

std::string placement_problem(const Graph& graph, const FusedReplacement& r) {
  const Node* at = insertion_point(graph, r);
  for (const Value* v : r.replaces) {
    if (v == nullptr) continue;
    for (const Node* user : graph.users(v)) {
      if (std::find(r.erase.begin(), r.erase.end(), user) != r.erase.end()) continue;
      if (at == nullptr || graph.is_before(user, at)) {
        return absl::StrCat("a ", op_name(user->op),
                            " reading a replaced value runs before the fused op's last input is "
                            "defined");
      }
    }
  }
  return "";
}

absl::StatusOr<Node*> apply_replacement(Graph& graph, const FusedReplacement& r) {
  std::vector<Type> in_types;
  for (const Value* v : r.inputs) in_types.push_back(v->type);
  absl::StatusOr<std::vector<Type>> types = infer_types(r.op, in_types, r.attrs, graph.symbols());
  if (!types.ok()) {
    return absl::InternalError(
        absl::StrCat("fused ", op_name(r.op), " does not type-check: ", types.status().message()));
  }
  for (size_t i = 0; i < r.replaces.size() && i < types->size(); ++i) {
    if (r.replaces[i] != nullptr && !(r.replaces[i]->type == (*types)[i])) {
      return absl::InternalError(absl::StrCat("fused ", op_name(r.op), " result ", i, " is ",
                                              (*types)[i].to_string(), " but replaces a ",
                                              r.replaces[i]->type.to_string()));
    }
  }
  Node* fused = graph.add_node(r.op, r.inputs, r.attrs, *types, insertion_point(graph, r));
  for (size_t i = 0; i < r.replaces.size(); ++i) {
    if (r.replaces[i] != nullptr) graph.replace_all_uses(r.replaces[i], fused->outputs[i]);
  }
  // Erase the pattern from its last node back, so every node is unused when erased.
  std::vector<Node*> erase = r.erase;
  std::sort(erase.begin(), erase.end(), [&](Node* a, Node* b) { return graph.is_before(b, a); });
  erase.erase(std::unique(erase.begin(), erase.end()), erase.end());
  for (Node* n : erase) {
    if (absl::Status s = graph.erase_node(n); !s.ok()) {
      return absl::InternalError(absl::StrCat("fusing into ", op_name(r.op), ": ", s.message()));
    }
  }
  return fused;
}

bool is_gemm_epilogue_add(const Graph& graph, const Node& add) {
  if (add.op != OpKind::kAdd) return false;
  for (int i = 0; i < 2; ++i) {
    const Value* m = add.inputs[i];
    const Value* other = add.inputs[1 - i];
    if (graph.use_count(m) != 1) continue;
    const bool residual = other->type == m->type;
    if (producer_of(m, OpKind::kMatmul) != nullptr) {
      const bool bias = other->type.rank() == 1 && other->type.shape[0] == m->type.shape.back() &&
                        other->type.dtype == m->type.dtype;
      if (bias || residual) return true;
    }
    // The residual add after a bias add: gemm's bias_residual epilogue.
    if (const Node* inner = producer_of(m, OpKind::kAdd); inner != nullptr && residual) {
      for (int j = 0; j < 2; ++j) {
        const Value* mm = inner->inputs[j];
        const Value* bias = inner->inputs[1 - j];
        if (producer_of(mm, OpKind::kMatmul) != nullptr && graph.use_count(mm) == 1 &&
            bias->type.rank() == 1 && bias->type.dtype == mm->type.dtype &&
            bias->type.shape[0] == mm->type.shape.back()) {
          return true;
        }
      }
    }
  }
  return false;
}

}  // namespace kiln
