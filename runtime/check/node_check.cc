#include "runtime/check/node_check.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/op_kind.h"
#include "ir/ops.h"
#include "runtime/reference/executor.h"

namespace kiln {

namespace {
std::string dims(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}
}  // namespace

absl::StatusOr<std::vector<HostTensor>> run_node_alone(const Graph& graph, const Node& node,
                                                       std::vector<HostTensor> operands,
                                                       const ParamViews& params,
                                                       const SymbolBindings& symbols,
                                                       const CascadeLayout* cascade) {
  if (operands.size() != node.inputs.size()) {
    return absl::InvalidArgumentError(absl::StrCat(op_name(node.op), " has ", node.inputs.size(),
                                                   " operands but ", operands.size(),
                                                   " values were given"));
  }
  Graph one(absl::StrCat("check_", op_name(node.op)));
  for (const Symbol& s : graph.symbols().symbols()) {
    if (absl::Status st = one.symbols().add(s); !st.ok()) return st;
  }
  InputBindings bindings;
  bindings.symbols = symbols;
  bindings.cascade = cascade;
  ParamViews used;
  std::vector<Value*> inputs;
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    const Value* v = node.inputs[i];
    if (v->kind == ValueKind::kParam) {
      auto it = params.find(v->name);
      if (it == params.end()) return absl::NotFoundError(absl::StrCat("no weight @", v->name));
      Value* p = one.find_param(v->name);
      if (p == nullptr) p = one.add_param(v->name, v->type);
      used.emplace(v->name, it->second);
      inputs.push_back(p);
      continue;
    }
    const std::string name = absl::StrCat("operand", i);
    inputs.push_back(one.add_input(name, v->type));
    if (is_kv_cache_operand(node, i)) {
      HostTensor& t = operands[i];
      bindings.caches[name] = KvCacheView{t.f.data(), t.shape};
    } else {
      bindings.tensors[name] = std::move(operands[i]);
    }
  }
  std::vector<Type> result_types;
  for (const Value* o : node.outputs) result_types.push_back(o->type);
  Node* copy = one.add_node(node.op, std::move(inputs), node.attrs, result_types);
  for (size_t j = 0; j < copy->outputs.size(); ++j) {
    one.add_output(absl::StrCat("result", j), copy->outputs[j]);
  }
  // One thread: the node is small next to a whole step, and a pool per node costs more than it
  // saves.
  absl::StatusOr<std::unique_ptr<ReferenceExecutor>> ex =
      ReferenceExecutor::create(one, std::move(used), /*num_threads=*/1);
  if (!ex.ok()) return ex.status();
  return (*ex)->run(bindings);
}

absl::StatusOr<OutputError> compare_tensors(const HostTensor& got, const HostTensor& want) {
  if (got.shape != want.shape || got.is_index() != want.is_index()) {
    return absl::InvalidArgumentError(
        absl::StrCat("shapes differ: got ", dims(got.shape), " ", dtype_name(got.dtype),
                     ", want ", dims(want.shape), " ", dtype_name(want.dtype)));
  }
  OutputError e;
  const int64_t n = want.numel();
  bool nonfinite = false;
  for (int64_t k = 0; k < n; ++k) {
    const double w = want.is_index() ? want.i[k] : want.f[k];
    const double g = got.is_index() ? got.i[k] : got.f[k];
    if (!std::isfinite(w)) continue;  // the reference's own -inf (a masked score) is not checked
    e.max_reference = std::max(e.max_reference, std::abs(w));
    if (!std::isfinite(g)) {
      nonfinite = true;
      continue;
    }
    e.max_abs = std::max(e.max_abs, std::abs(g - w));
  }
  if (nonfinite) {
    e.relative = std::numeric_limits<double>::infinity();
  } else if (e.max_abs > 0) {
    e.relative = e.max_abs / std::max(e.max_reference, 1e-30);
  }
  return e;
}

double result_tolerance(const Node& node, size_t result) {
  const Value* out = node.outputs[result];
  if (out->type.dtype == DType::kFP8E4M3) return kFp8CodeTolerance;  // an fp8e4m3 cache's codes
  // An fp8e4m3 cache's scale array: amax / 448 of the same rows on both sides.
  if (const std::optional<KvWriteOp> w = op_view<KvWriteOp>(&node); w && out == w->scales_out()) {
    return 1e-3;
  }
  if (const std::optional<FlashAttentionOp> a = op_view<FlashAttentionOp>(&node);
      a && (out == a->k_scales_out() || out == a->v_scales_out())) {
    return 1e-3;
  }
  auto tolerance_of = [](DType dt) {
    switch (dt) {
      case DType::kBF16: return 2e-2;  // 8 bits, and sums of many rounded terms
      case DType::kF16: return 4e-3;   // 11 bits
      default: return 1e-3;            // f32: only the order of summation differs
    }
  };
  double tol = 1e-3;
  auto see = [&](const Value* v) {
    // fp8e4m3 caches are shared codes, not a rounding of this node (see node_check.h).
    if (is_float(v->type.dtype) && v->type.dtype != DType::kFP8E4M3) {
      tol = std::max(tol, tolerance_of(v->type.dtype));
    }
  };
  for (const Value* v : node.inputs) see(v);
  for (const Value* v : node.outputs) see(v);
  return tol;
}

}  // namespace kiln
