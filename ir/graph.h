// The graph IR: one Node type, SSA Values, named params (weights), inputs and outputs.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ir/attributes.h"
#include "ir/op_kind.h"
#include "ir/shape.h"
#include "ir/type.h"

namespace kiln {

struct Node;
class Graph;

enum class ValueKind : uint8_t { kInput, kParam, kResult };

/// Which axis of a checkpoint tensor a ParamPart slices: its rows (axis 0) or, of a matrix, its
/// columns (axis 1).
enum class SliceAxis : uint8_t { kRows, kCols };

/// [begin, end) along `axis` of the checkpoint tensor named `source`: rows with every trailing
/// dim, or columns of a [N, K] matrix with every row. A param with parts is derived: the
/// concatenation of its parts along their one shared axis, assembled when the weights are loaded
/// (fuse-horizontal's merged Q/K/V and gate/up weights stack rows; a tensor-parallel rank's slice
/// of a row-parallel weight is one column part).
struct ParamPart {
  std::string source;
  SliceAxis axis = SliceAxis::kRows;
  int64_t begin = 0, end = 0;
  bool operator==(const ParamPart&) const = default;
};

/// "rows" or "cols": the IR text's name of a part list along `axis`.
const char* slice_axis_name(SliceAxis axis);

/// An SSA value: a graph input (`%tokens`), a parameter (`@layers.0.q_proj`) or a node result.
struct Value {
  int id = 0;
  ValueKind kind = ValueKind::kResult;
  Type type;
  std::string name;          // required for inputs and params; optional for results
  Node* producer = nullptr;  // set for results
  int output_index = 0;
  /// Params only: the checkpoint slices this param concatenates, the same on every rank; empty
  /// for a param that is the checkpoint tensor named `name` (or that is sharded).
  std::vector<ParamPart> parts;
  /// Params of a tensor-parallel graph only: rank r's slices of the checkpoint (rank_parts[r]),
  /// one list per rank of the graph (Graph::ranks()); empty for a param every rank holds whole
  /// (or derives alike, through `parts`). Set by shard-tensor-parallel.
  std::vector<std::vector<ParamPart>> rank_parts;

  /// Whether the param's bytes differ per tensor-parallel rank.
  bool sharded() const { return !rank_parts.empty(); }
  /// The parts rank `rank` assembles this param from: rank_parts[rank] when sharded, else
  /// `parts` (empty: the checkpoint tensor `name` itself).
  const std::vector<ParamPart>& parts_of_rank(int rank) const {
    return sharded() ? rank_parts[rank] : parts;
  }

 private:
  friend class Graph;
  // One entry per read by a node operand (a node reading the value twice appears twice), kept by
  // the Graph's mutation API so that users() and use_count() cost O(reads), not O(graph).
  struct Use {
    Node* node;
    int operand;
  };
  std::vector<Use> uses_;
  int output_reads_ = 0;  // graph outputs that name this value
};

/// A node. Its fields are read freely; `inputs` is changed only through the Graph (add_node,
/// set_input, replace_all_uses), which keeps every value's use-list in step with it.
struct Node {
  int id = 0;
  OpKind op = OpKind::kConstant;
  std::vector<Value*> inputs;
  std::vector<Value*> outputs;
  Attributes attrs;

  Value* output(int i = 0) const { return outputs[i]; }

 private:
  friend class Graph;
  // Program order is a doubly linked list with gapped order keys (as MLIR's blocks), so that a
  // rewrite inserts and erases in O(1) and compares positions with is_before() in O(1).
  const Graph* owner_ = nullptr;
  Node* prev_ = nullptr;
  Node* next_ = nullptr;
  uint64_t order_ = 0;
  int slot_ = 0;                // index in Graph::nodes_ (the program position when materialized)
  std::vector<int> use_slots_;  // use_slots_[i]: where this read sits in inputs[i]->uses_
};

/// Counters of the Graph's own bookkeeping, for tests that assert the passes stay linear.
struct GraphStats {
  int64_t order_rebuilds = 0;  // O(nodes) rebuilds of nodes() after a mid-graph insert or erase
  int64_t renumbers = 0;       // O(nodes) renumberings of the order keys (a gap ran out)
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
  /// Tensor-parallel ranks that each run this program (SPMD: one program, each rank on its own
  /// weight slices and KV cache, meeting at all_reduce / all_gather nodes); 1 for a graph that is
  /// not sharded. Printed as `ranks N` when above 1.
  int ranks() const { return ranks_; }
  void set_ranks(int ranks) { ranks_ = ranks; }

  Value* add_input(const std::string& name, Type type);
  Value* add_param(const std::string& name, Type type, std::vector<ParamPart> parts = {});
  /// A param whose slice of the checkpoint differs per tensor-parallel rank (Value::rank_parts).
  Value* add_sharded_param(const std::string& name, Type type,
                           std::vector<std::vector<ParamPart>> rank_parts);
  /// Removes the params for which `drop(param)` holds and that nothing reads (e.g. the weights
  /// a derived param replaced); returns how many. O(params).
  int erase_unread_params(const std::function<bool(const Value*)>& drop);
  /// Appends a node (or inserts it before `insert_before`) with results of the given types.
  /// Types are not checked here: builders infer them and the verifier checks them. O(inputs).
  Node* add_node(OpKind op, std::vector<Value*> inputs, Attributes attrs,
                 const std::vector<Type>& output_types, Node* insert_before = nullptr);
  /// Rewires operand `operand` of `node` to `value`.
  void set_input(Node* node, int operand, Value* value);
  void add_output(const std::string& name, Value* value);
  void set_output(int index, Value* value);

  const std::vector<Value*>& inputs() const { return inputs_; }
  const std::vector<Value*>& params() const { return params_; }
  const std::vector<GraphOutput>& outputs() const { return outputs_; }
  /// Nodes in program order (a topological order). O(1), except for the first call after a
  /// mid-graph insert or an erase, which rebuilds the vector (O(nodes)): a rewrite loop walks
  /// with next() / is_before() instead of calling this per step.
  const std::vector<std::unique_ptr<Node>>& nodes() const;
  int num_nodes() const { return num_nodes_; }
  /// The first node in program order, and the node after `node` (nullptr at the end). O(1).
  Node* first_node() const { return first_; }
  Node* next(const Node* node) const { return node->next_; }
  /// True when `a` comes before `b` in program order (both in this graph). O(1).
  bool is_before(const Node* a, const Node* b) const { return a->order_ < b->order_; }

  Value* find_input(std::string_view name) const;
  Value* find_param(std::string_view name) const;

  /// Nodes that read `value`, in program order (a node reading it twice appears once).
  /// O(r log r) for r reads.
  std::vector<Node*> users(const Value* value) const;
  /// Number of reads of `value` by nodes and graph outputs. O(1).
  int use_count(const Value* value) const {
    return static_cast<int>(value->uses_.size()) + value->output_reads_;
  }
  /// Rewires every read of `from` (node inputs and graph outputs) to `to`. O(reads of `from`).
  void replace_all_uses(const Value* from, Value* to);
  /// Removes a node whose results are unused; returns FailedPrecondition otherwise. O(inputs).
  absl::Status erase_node(Node* node);
  /// Removes nodes whose results are unused and that have no side effects; returns how many.
  int remove_dead_nodes();
  /// Position of `node` in program order, or -1 for a node of another graph. O(1) when nodes()
  /// is current (see nodes()).
  int index_of(const Node* node) const;

  /// A deep copy (same names, types, attributes and order).
  std::unique_ptr<Graph> clone() const;

  const GraphStats& stats() const { return stats_; }

 private:
  Value* new_value(ValueKind kind, Type type, std::string name);
  void add_use(Node* node, int operand);
  void remove_use(Node* node, int operand);
  void link_before(Node* node, Node* before);
  void renumber();
  void materialize() const;

  std::string name_;
  int ranks_ = 1;
  SymbolTable symbols_;
  std::vector<std::unique_ptr<Value>> values_;
  std::vector<Value*> inputs_;
  std::vector<Value*> params_;
  std::vector<GraphOutput> outputs_;
  int next_node_id_ = 0;
  // Ownership of the nodes. In program order while order_dirty_ is false; after a mid-graph
  // insert or an erase it is in arrival order with holes until nodes() rebuilds it from the list.
  mutable std::vector<std::unique_ptr<Node>> nodes_;
  mutable std::atomic<bool> order_dirty_ = false;
  mutable std::mutex order_mutex_;  // concurrent const readers may trigger the rebuild
  mutable GraphStats stats_;
  Node* first_ = nullptr;
  Node* last_ = nullptr;
  int num_nodes_ = 0;
};

}  // namespace kiln
