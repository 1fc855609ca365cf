// Named operand accessors (see ir/ops.h).
#include "ir/ops.h"

#include "absl/strings/str_cat.h"

namespace kiln {
namespace {

PageTableOperands pages_at(const Node& node, int first) {
  return {node.inputs[first], node.inputs[first + 1], node.inputs[first + 2],
          node.inputs[first + 3]};
}

}  // namespace

std::optional<PageTableOperands> page_table_of(const Node& node) {
  if (PagedQkOp::matches(&node)) return PagedQkOp(node).pages();
  if (PagedPvOp::matches(&node)) return PagedPvOp(node).pages();
  if (FlashAttentionOp::matches(&node)) return FlashAttentionOp(node).pages();
  return std::nullopt;
}

PageTableOperands PagedQkOp::pages() const { return pages_at(node(), kPageTable); }
PageTableOperands PagedPvOp::pages() const { return pages_at(node(), kPageTable); }
PageTableOperands FlashAttentionOp::pages() const { return pages_at(node(), kPageTable); }

std::vector<Value*> FlashAttentionOp::operands(const Operands& o) {
  std::vector<Value*> out = {o.q, o.k, o.v, o.k_cache, o.v_cache, o.positions, o.slot_mapping};
  for (Value* v : o.pages.list()) out.push_back(v);
  if (o.k_scales != nullptr || o.v_scales != nullptr) {
    out.push_back(o.k_scales);
    out.push_back(o.v_scales);
  }
  return out;
}

std::string_view GemmOp::epilogue_name(Epilogue e) {
  switch (e) {
    case Epilogue::kNone: return "none";
    case Epilogue::kBias: return "bias";
    case Epilogue::kResidual: return "residual";
    case Epilogue::kBiasResidual: return "bias_residual";
  }
  return "?";
}

absl::StatusOr<GemmOp::Epilogue> GemmOp::parse_epilogue(std::string_view name) {
  for (Epilogue e :
       {Epilogue::kNone, Epilogue::kBias, Epilogue::kResidual, Epilogue::kBiasResidual}) {
    if (epilogue_name(e) == name) return e;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown gemm epilogue \"", std::string(name),
                                                 "\" (none, bias, residual, bias_residual)"));
}

std::optional<GemmOp> GemmOp::of(const Node* node) {
  if (node == nullptr || node->op != kKind) return std::nullopt;
  absl::StatusOr<std::string> name = node->attrs.get_string("epilogue");
  if (!name.ok()) return std::nullopt;
  absl::StatusOr<Epilogue> e = parse_epilogue(*name);
  if (!e.ok() || static_cast<int>(node->inputs.size()) != num_operands(*e)) {
    return std::nullopt;
  }
  return GemmOp(*node, *e);
}

Value* GemmOp::bias() const {
  const int i = bias_index(epilogue_);
  return i < 0 ? nullptr : node_->inputs[i];
}

Value* GemmOp::residual() const {
  const int i = residual_index(epilogue_);
  return i < 0 ? nullptr : node_->inputs[i];
}

GemmOp::Epilogue GemmOp::epilogue_for(bool bias, bool residual) {
  if (bias) return residual ? Epilogue::kBiasResidual : Epilogue::kBias;
  return residual ? Epilogue::kResidual : Epilogue::kNone;
}

std::vector<Value*> GemmOp::operands(Value* x, Value* w, Value* bias, Value* residual) {
  std::vector<Value*> out = {x, w};
  if (bias != nullptr) out.push_back(bias);
  if (residual != nullptr) out.push_back(residual);
  return out;
}

}  // namespace kiln
