// GraphBuilder: typed construction helpers. They validate inputs and infer result types (through
// ir/type_inference.h) and link nodes; they compute nothing. The first error is kept (with the op
// that caused it) and later calls become no-ops returning nullptr, so model code reads straight.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ir/graph.h"

namespace kiln {

class GraphBuilder {
 public:
  explicit GraphBuilder(Graph& graph) : graph_(graph) {}

  Graph& graph() { return graph_; }
  /// OK, or the first error met (e.g. "matmul: matmul contraction dim mismatch: 576 vs 64").
  const absl::Status& status() const { return status_; }

  /// Any op by kind; returns its results (empty after an error).
  std::vector<Value*> op(OpKind kind, std::vector<Value*> inputs, Attributes attrs = {});
  Value* op1(OpKind kind, std::vector<Value*> inputs, Attributes attrs = {});

  Value* input(const std::string& name, Type type);
  Value* param(const std::string& name, Type type);
  void output(const std::string& name, Value* value);
  void symbol(const std::string& name, int64_t upper_bound);

  Value* constant(double value, DType dtype);
  Value* gather(Value* table, Value* indices);
  Value* reshape(Value* x, IntList shape);
  Value* slice(Value* x, int64_t axis, int64_t start, int64_t end);
  Value* concat(std::vector<Value*> xs, int64_t axis);
  Value* last_token_rows(Value* x, Value* qo_indptr);
  Value* matmul(Value* x, Value* w);
  Value* add(Value* a, Value* b) { return op1(OpKind::kAdd, {a, b}); }
  Value* sub(Value* a, Value* b) { return op1(OpKind::kSub, {a, b}); }
  Value* mul(Value* a, Value* b) { return op1(OpKind::kMul, {a, b}); }
  Value* div(Value* a, Value* b) { return op1(OpKind::kDiv, {a, b}); }
  Value* neg(Value* x) { return op1(OpKind::kNeg, {x}); }
  Value* exp(Value* x) { return op1(OpKind::kExp, {x}); }
  Value* rsqrt(Value* x) { return op1(OpKind::kRsqrt, {x}); }
  Value* silu(Value* x) { return op1(OpKind::kSilu, {x}); }
  Value* cast(Value* x, DType dtype);
  Value* reduce_sum(Value* x) { return op1(OpKind::kReduceSum, {x}); }
  Value* reduce_mean(Value* x) { return op1(OpKind::kReduceMean, {x}); }
  Value* reduce_max(Value* x) { return op1(OpKind::kReduceMax, {x}); }

 private:
  Graph& graph_;
  absl::Status status_;
};

}  // namespace kiln
