// GraphBuilder implementation.
#include "ir/builder.h"

#include "absl/strings/str_cat.h"
#include "ir/type_inference.h"

namespace kiln {

std::vector<Value*> GraphBuilder::op(OpKind kind, std::vector<Value*> inputs, Attributes attrs) {
  if (!status_.ok()) return {};
  std::vector<Type> types;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i] == nullptr) {
      status_ = absl::InvalidArgumentError(absl::StrCat(op_name(kind), ": input ", i, " is null"));
      return {};
    }
    types.push_back(inputs[i]->type);
  }
  absl::StatusOr<std::vector<Type>> out = infer_types(kind, types, attrs, graph_.symbols());
  if (!out.ok()) {
    status_ = absl::Status(out.status().code(),
                           absl::StrCat(op_name(kind), ": ", out.status().message()));
    return {};
  }
  return graph_.add_node(kind, std::move(inputs), std::move(attrs), *out)->outputs;
}

Value* GraphBuilder::op1(OpKind kind, std::vector<Value*> inputs, Attributes attrs) {
  std::vector<Value*> out = op(kind, std::move(inputs), std::move(attrs));
  return out.empty() ? nullptr : out[0];
}

Value* GraphBuilder::input(const std::string& name, Type type) {
  if (!status_.ok()) return nullptr;
  return graph_.add_input(name, std::move(type));
}

Value* GraphBuilder::param(const std::string& name, Type type) {
  if (!status_.ok()) return nullptr;
  return graph_.add_param(name, std::move(type));
}

void GraphBuilder::output(const std::string& name, Value* value) {
  if (!status_.ok()) return;
  if (value == nullptr) {
    status_ = absl::InvalidArgumentError(absl::StrCat("output ", name, " is null"));
    return;
  }
  graph_.add_output(name, value);
}

void GraphBuilder::symbol(const std::string& name, int64_t upper_bound) {
  if (!status_.ok()) return;
  status_ = graph_.symbols().add({name, upper_bound});
}

Value* GraphBuilder::constant(double value, DType dtype) {
  Attributes a;
  a.set("value", value);
  a.set("dtype", dtype);
  return op1(OpKind::kConstant, {}, std::move(a));
}

Value* GraphBuilder::gather(Value* table, Value* indices) {
  return op1(OpKind::kGather, {table, indices});
}

Value* GraphBuilder::reshape(Value* x, IntList shape) {
  Attributes a;
  a.set("shape", std::move(shape));
  return op1(OpKind::kReshape, {x}, std::move(a));
}

Value* GraphBuilder::slice(Value* x, int64_t axis, int64_t start, int64_t end) {
  Attributes a;
  a.set("axis", axis);
  a.set("start", start);
  a.set("end", end);
  return op1(OpKind::kSlice, {x}, std::move(a));
}

Value* GraphBuilder::concat(std::vector<Value*> xs, int64_t axis) {
  Attributes a;
  a.set("axis", axis);
  return op1(OpKind::kConcat, std::move(xs), std::move(a));
}

Value* GraphBuilder::last_token_rows(Value* x, Value* qo_indptr) {
  return op1(OpKind::kLastTokenRows, {x, qo_indptr});
}

Value* GraphBuilder::matmul(Value* x, Value* w) { return op1(OpKind::kMatmul, {x, w}); }

Value* GraphBuilder::cast(Value* x, DType dtype) {
  Attributes a;
  a.set("dtype", dtype);
  return op1(OpKind::kCast, {x}, std::move(a));
}

}  // namespace kiln
