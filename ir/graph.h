// The graph IR: one Node type, SSA Values, named params (weights), inputs and outputs.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ir/attributes.h"
#include "ir/op_kind.h"
#include "ir/shape.h"
#include "ir/type.h"

namespace kiln {

struct Node;

enum class ValueKind : uint8_t { kInput, kParam, kResult };

/// An SSA value: a graph input (`%tokens`), a parameter (`@layers.0.q_proj`) or a node result.
struct Value {
  int id = 0;
  ValueKind kind = ValueKind::kResult;
  Type type;
  std::string name;          // required for inputs and params; optional for results
  Node* producer = nullptr;  // set for results
  int output_index = 0;
};

struct Node {
  int id = 0;
  OpKind op = OpKind::kConstant;
  std::vector<Value*> inputs;
  std::vector<Value*> outputs;
  Attributes attrs;

  Value* output(int i = 0) const { return outputs[i]; }
};

struct GraphOutput {
  std::string name;
  Value* value = nullptr;
};

class Graph {
 public:
  explicit Graph(std::string name = "main") : name_(std::move(name)) {}
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  const std::string& name() const { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }
  SymbolTable& symbols() { return symbols_; }
  const SymbolTable& symbols() const { return symbols_; }

  Value* add_input(const std::string& name, Type type);
  Value* add_param(const std::string& name, Type type);
  /// Appends a node (or inserts it before `insert_before`) with results of the given types.
  /// Types are not checked here: builders infer them and the verifier checks them.
  Node* add_node(OpKind op, std::vector<Value*> inputs, Attributes attrs,
                 const std::vector<Type>& output_types, Node* insert_before = nullptr);
  void add_output(const std::string& name, Value* value);
  void set_output(int index, Value* value) { outputs_[index].value = value; }

  const std::vector<Value*>& inputs() const { return inputs_; }
  const std::vector<Value*>& params() const { return params_; }
  const std::vector<GraphOutput>& outputs() const { return outputs_; }
  /// Nodes in program order (a topological order).
  const std::vector<std::unique_ptr<Node>>& nodes() const { return nodes_; }
  int num_nodes() const { return static_cast<int>(nodes_.size()); }

  Value* find_input(std::string_view name) const;
  Value* find_param(std::string_view name) const;

  /// Nodes that read `value` (a node reading it twice appears once).
  std::vector<Node*> users(const Value* value) const;
  /// Number of reads of `value` by nodes and graph outputs.
  int use_count(const Value* value) const;
  /// Rewires every read of `from` (node inputs and graph outputs) to `to`.
  void replace_all_uses(const Value* from, Value* to);
  /// Removes a node whose results are unused; returns FailedPrecondition otherwise.
  absl::Status erase_node(Node* node);
  /// Removes nodes whose results are unused and that have no side effects; returns how many.
  int remove_dead_nodes();
  /// Position of `node` in program order, or -1.
  int index_of(const Node* node) const;

  /// A deep copy (same names, types, attributes and order).
  std::unique_ptr<Graph> clone() const;

 private:
  Value* new_value(ValueKind kind, Type type, std::string name);

  std::string name_;
  SymbolTable symbols_;
  std::vector<std::unique_ptr<Value>> values_;
  std::vector<Value*> inputs_;
  std::vector<Value*> params_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<GraphOutput> outputs_;
  int next_node_id_ = 0;
};

}  // namespace kiln
