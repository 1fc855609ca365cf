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

Value* Graph::add_param(const std::string& name, Type type, std::vector<ParamPart> parts) {
  Value* v = new_value(ValueKind::kParam, std::move(type), name);
  v->parts = std::move(parts);
  params_.push_back(v);
  return v;
}

Value* Graph::add_sharded_param(const std::string& name, Type type,
                                std::vector<std::vector<ParamPart>> rank_parts) {
  Value* v = new_value(ValueKind::kParam, std::move(type), name);
  v->rank_parts = std::move(rank_parts);
  params_.push_back(v);
  return v;
}

const char* slice_axis_name(SliceAxis axis) { return axis == SliceAxis::kCols ? "cols" : "rows"; }

int Graph::erase_unread_params(const std::function<bool(const Value*)>& drop) {
  // The Values stay owned by values_ (ids stay dense and stable); only the list changes.
  const size_t before = params_.size();
  std::erase_if(params_, [&](const Value* p) { return use_count(p) == 0 && drop(p); });
  return static_cast<int>(before - params_.size());
}

namespace {

// Spacing of the order keys: an insertion takes the midpoint of its neighbours' keys, so 2^32
// lets 32 insertions land between two nodes before the keys are renumbered.
constexpr uint64_t kOrderStride = uint64_t{1} << 32;

}  // namespace

void Graph::add_use(Node* node, int operand) {
  Value* v = node->inputs[operand];
  if (v == nullptr) {  // the verifier reports it; nothing to track
    node->use_slots_[operand] = -1;
    return;
  }
  node->use_slots_[operand] = static_cast<int>(v->uses_.size());
  v->uses_.push_back({node, operand});
}

void Graph::remove_use(Node* node, int operand) {
  Value* v = node->inputs[operand];
  const int slot = node->use_slots_[operand];
  if (v == nullptr || slot < 0) return;
  // Swap-remove: the last read takes this read's slot.
  Value::Use moved = v->uses_.back();
  v->uses_[slot] = moved;
  moved.node->use_slots_[moved.operand] = slot;
  v->uses_.pop_back();
  node->use_slots_[operand] = -1;
}

void Graph::renumber() {
  ++stats_.renumbers;
  uint64_t key = 0;
  for (Node* n = first_; n != nullptr; n = n->next_) n->order_ = key += kOrderStride;
}

void Graph::link_before(Node* node, Node* before) {
  if (before == nullptr) {  // append
    node->prev_ = last_;
    (last_ ? last_->next_ : first_) = node;
    const uint64_t base = last_ ? last_->order_ : 0;
    last_ = node;
    if (base > UINT64_MAX - kOrderStride) {
      renumber();
    } else {
      node->order_ = base + kOrderStride;
    }
    return;
  }
  Node* prev = before->prev_;
  node->prev_ = prev;
  node->next_ = before;
  before->prev_ = node;
  (prev ? prev->next_ : first_) = node;
  const uint64_t lo = prev ? prev->order_ : 0;
  if (before->order_ - lo < 2) {
    renumber();
  } else {
    node->order_ = lo + (before->order_ - lo) / 2;
  }
}

Node* Graph::add_node(OpKind op, std::vector<Value*> inputs, Attributes attrs,
                      const std::vector<Type>& output_types, Node* insert_before) {
  auto node = std::make_unique<Node>();
  node->id = next_node_id_++;
  node->op = op;
  node->inputs = std::move(inputs);
  node->attrs = std::move(attrs);
  node->owner_ = this;
  for (size_t i = 0; i < output_types.size(); ++i) {
    Value* v = new_value(ValueKind::kResult, output_types[i], "");
    v->producer = node.get();
    v->output_index = static_cast<int>(i);
    node->outputs.push_back(v);
  }
  Node* raw = node.get();
  raw->use_slots_.resize(raw->inputs.size());
  for (int i = 0; i < static_cast<int>(raw->inputs.size()); ++i) add_use(raw, i);
  if (insert_before != nullptr && insert_before->owner_ != this) insert_before = nullptr;
  link_before(raw, insert_before);
  // An append keeps nodes_ in program order; a mid-graph insert defers the reordering to the
  // next nodes() call.
  if (insert_before != nullptr) order_dirty_.store(true, std::memory_order_relaxed);
  raw->slot_ = static_cast<int>(nodes_.size());
  nodes_.push_back(std::move(node));
  ++num_nodes_;
  return raw;
}

void Graph::set_input(Node* node, int operand, Value* value) {
  remove_use(node, operand);
  node->inputs[operand] = value;
  add_use(node, operand);
}

void Graph::add_output(const std::string& name, Value* value) {
  outputs_.push_back({name, value});
  if (value != nullptr) ++value->output_reads_;
}

void Graph::set_output(int index, Value* value) {
  if (outputs_[index].value != nullptr) --outputs_[index].value->output_reads_;
  outputs_[index].value = value;
  if (value != nullptr) ++value->output_reads_;
}

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

void Graph::materialize() const {
  ++stats_.order_rebuilds;
  std::vector<std::unique_ptr<Node>> ordered;
  ordered.reserve(num_nodes_);
  for (Node* n = first_; n != nullptr; n = n->next_) {
    ordered.push_back(std::move(nodes_[n->slot_]));
    n->slot_ = static_cast<int>(ordered.size()) - 1;
  }
  nodes_ = std::move(ordered);  // the holes left by erased nodes go with the old vector
}

const std::vector<std::unique_ptr<Node>>& Graph::nodes() const {
  if (order_dirty_.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(order_mutex_);
    if (order_dirty_.load(std::memory_order_relaxed)) {
      materialize();
      order_dirty_.store(false, std::memory_order_release);
    }
  }
  return nodes_;
}

std::vector<Node*> Graph::users(const Value* value) const {
  std::vector<Node*> out;
  out.reserve(value->uses_.size());
  for (const Value::Use& u : value->uses_) out.push_back(u.node);
  std::sort(out.begin(), out.end(),
            [](const Node* a, const Node* b) { return a->order_ < b->order_; });
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

void Graph::replace_all_uses(const Value* from, Value* to) {
  if (from == to) return;
  Value* source = const_cast<Value*>(from);  // its use-list empties; the value itself stays
  std::vector<Value::Use> uses = std::move(source->uses_);
  source->uses_.clear();
  for (const Value::Use& u : uses) {
    u.node->inputs[u.operand] = to;
    add_use(u.node, u.operand);
  }
  if (source->output_reads_ > 0) {
    for (GraphOutput& o : outputs_) {
      if (o.value == from) o.value = to;
    }
    if (to != nullptr) to->output_reads_ += source->output_reads_;
    source->output_reads_ = 0;
  }
}

int Graph::index_of(const Node* node) const {
  if (node == nullptr || node->owner_ != this) return -1;
  nodes();  // brings slot_ up to date
  return node->slot_;
}

absl::Status Graph::erase_node(Node* node) {
  for (Value* out : node->outputs) {
    if (use_count(out) > 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot erase ", op_name(node->op), " node: its result is still used"));
    }
  }
  if (node->owner_ != this) return absl::NotFoundError("node is not in this graph");
  for (int i = 0; i < static_cast<int>(node->inputs.size()); ++i) remove_use(node, i);
  (node->prev_ ? node->prev_->next_ : first_) = node->next_;
  (node->next_ ? node->next_->prev_ : last_) = node->prev_;
  --num_nodes_;
  const bool was_clean_tail = !order_dirty_.load(std::memory_order_relaxed) &&
                              node->slot_ + 1 == static_cast<int>(nodes_.size());
  nodes_[node->slot_].reset();
  if (was_clean_tail) {
    nodes_.pop_back();  // still in program order
  } else {
    order_dirty_.store(true, std::memory_order_relaxed);
  }
  return absl::OkStatus();
}

int Graph::remove_dead_nodes() {
  // Walking backwards, a node's readers come after it and have already been decided, so a dead
  // chain goes in one sweep: a node is dead when nothing reads its results and it has no side
  // effects.
  int removed = 0;
  for (Node* n = last_; n != nullptr;) {
    Node* prev = n->prev_;
    bool live = op_traits(n->op).side_effect;
    for (const Value* out : n->outputs) live = live || use_count(out) > 0;
    if (!live) {
      absl::Status s = erase_node(n);
      (void)s;  // cannot fail: its results are unused and it is in this graph
      ++removed;
    }
    n = prev;
  }
  nodes();
  return removed;
}

std::unique_ptr<Graph> Graph::clone() const {
  auto g = std::make_unique<Graph>(name_);
  g->symbols_ = symbols_;
  g->ranks_ = ranks_;
  std::unordered_map<const Value*, Value*> map;
  for (Value* v : inputs_) map[v] = g->add_input(v->name, v->type);
  for (Value* v : params_) {
    map[v] = g->add_param(v->name, v->type, v->parts);
    map[v]->rank_parts = v->rank_parts;
  }
  for (const auto& n : nodes()) {
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
