// Output types of every op from its input types and attributes: one exhaustive switch, used by
// the builders (to create results) and by the verifier (to check declared types).
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ir/attributes.h"
#include "ir/op_kind.h"
#include "ir/shape.h"
#include "ir/type.h"

namespace kiln {

/// Infers the result types of `op` applied to inputs of `input_types` with `attrs`. Errors say
/// which input or attribute is wrong and what was expected. `symbols` resolves symbol names used
/// by attributes (paged_qk's kv_dim).
absl::StatusOr<std::vector<Type>> infer_types(OpKind op, absl::Span<const Type> input_types,
                                              const Attributes& attrs, const SymbolTable& symbols);

/// Numpy-style broadcast of two shapes (trailing dims aligned; a constant 1 stretches).
absl::StatusOr<Shape> broadcast_shapes(const Shape& a, const Shape& b);

}  // namespace kiln
