// Graph construction and rewriting primitives.
#include "ir/graph.h"

#include <algorithm>
#include <unordered_map>

#include "absl/strings/str_cat.h"

namespace kiln {

Value* Graph::new_value(ValueKind kind, Type type, std::string name) {
  auto v = std::make_unique<Value>();
  v->id = static_cast<int>(values_.size());
  v->kind = kind;
  v->type = std::move(type);
  v->name = std::move(name);
  values_.push_back(std::move(v));
  return values_.back().get();
}

Value* Graph::add_input(const std::string& name, Type type) {
  Value* v = new_value(ValueKind::kInput, std::move(type), name);
  inputs_.push_back(v);
  return v;
}

Value* Graph::add_param(const std::string& name, Type type) {
  Value* v = new_value(ValueKind::kParam, std::move(type), name);
  params_.push_back(v);
  return v;
}

Node* Graph::add_node(OpKind op, std::vector<Value*> inputs, Attributes attrs,
                      const std::vector<Type>& output_types, Node* insert_before) {
  auto node = std::make_unique<Node>();
  node->id = next_node_id_++;
  node->op = op;
  node->inputs = std::move(inputs);
  node->attrs = std::move(attrs);
  for (size_t i = 0; i < output_types.size(); ++i) {
    Value* v = new_value(ValueKind::kResult, output_types[i], "");
    v->producer = node.get();
    v->output_index = static_cast<int>(i);
    node->outputs.push_back(v);
  }
  Node* raw = node.get();
  int at = insert_before ? index_of(insert_before) : -1;
  if (at < 0) {
    nodes_.push_back(std::move(node));
  } else {
    nodes_.insert(nodes_.begin() + at, std::move(node));
  }
  return raw;
}

void Graph::add_output(const std::string& name, Value* value) { outputs_.push_back({name, value}); }

Value* Graph::find_input(std::string_view name) const {
  for (Value* v : inputs_) {
    if (v->name == name) return v;
  }
  return nullptr;
}

Value* Graph::find_param(std::string_view name) const {
  for (Value* v : params_) {
    if (v->name == name) return v;
  }
  return nullptr;
}

std::vector<Node*> Graph::users(const Value* value) const {
  std::vector<Node*> out;
  for (const auto& n : nodes_) {
    if (std::find(n->inputs.begin(), n->inputs.end(), value) != n->inputs.end()) {
      out.push_back(n.get());
    }
  }
  return out;
}

int Graph::use_count(const Value* value) const {
  int count = 0;
  for (const auto& n : nodes_)
    count += static_cast<int>(std::count(n->inputs.begin(), n->inputs.end(), value));
  for (const GraphOutput& o : outputs_) count += o.value == value ? 1 : 0;
  return count;
}

void Graph::replace_all_uses(const Value* from, Value* to) {
  for (auto& n : nodes_) {
    for (Value*& in : n->inputs) {
      if (in == from) in = to;
    }
  }
  for (GraphOutput& o : outputs_) {
    if (o.value == from) o.value = to;
  }
}

int Graph::index_of(const Node* node) const {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].get() == node) return static_cast<int>(i);
  }
  return -1;
}

absl::Status Graph::erase_node(Node* node) {
  for (Value* out : node->outputs) {
    if (use_count(out) > 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot erase ", op_name(node->op), " node: its result is still used"));
    }
  }
  int at = index_of(node);
  if (at < 0) return absl::NotFoundError("node is not in this graph");
  nodes_.erase(nodes_.begin() + at);
  return absl::OkStatus();
}

int Graph::remove_dead_nodes() {
  // Walk backwards counting uses once: a node is dead when none of its results is read by a
  // live node or an output and it has no side effects.
  std::unordered_map<const Value*, int> uses;
  for (const GraphOutput& o : outputs_) uses[o.value]++;
  std::vector<bool> live(nodes_.size(), false);
  for (int i = static_cast<int>(nodes_.size()) - 1; i >= 0; --i) {
    const Node& n = *nodes_[i];
    bool is_live = op_traits(n.op).side_effect;
    for (const Value* out : n.outputs) is_live = is_live || uses[out] > 0;
    if (!is_live) continue;
    live[i] = true;
    for (const Value* in : n.inputs) uses[in]++;
  }
  int removed = 0;
  std::vector<std::unique_ptr<Node>> kept;
  kept.reserve(nodes_.size());
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (live[i]) {
      kept.push_back(std::move(nodes_[i]));
    } else {
      ++removed;
    }
  }
  nodes_ = std::move(kept);
  return removed;
}

std::unique_ptr<Graph> Graph::clone() const {
  auto g = std::make_unique<Graph>(name_);
  g->symbols_ = symbols_;
  std::unordered_map<const Value*, Value*> map;
  for (Value* v : inputs_) map[v] = g->add_input(v->name, v->type);
  for (Value* v : params_) map[v] = g->add_param(v->name, v->type);
  for (const auto& n : nodes_) {
    std::vector<Value*> ins;
    for (Value* in : n->inputs) ins.push_back(map.at(in));
    std::vector<Type> types;
    for (Value* out : n->outputs) types.push_back(out->type);
    Node* copy = g->add_node(n->op, std::move(ins), n->attrs, types);
    for (size_t i = 0; i < n->outputs.size(); ++i) {
      copy->outputs[i]->name = n->outputs[i]->name;
      map[n->outputs[i]] = copy->outputs[i];
    }
  }
  for (const GraphOutput& o : outputs_) g->add_output(o.name, map.at(o.value));
  return g;
}

}  // namespace kiln
