#include "ir/view.h"

namespace kiln {
namespace {

/// The product of the constant dims [begin, end) of `s`, or nullopt if one is symbolic.
std::optional<int64_t> const_product(const Shape& s, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) {
    if (s[i].is_symbolic()) return std::nullopt;
    p *= s[i].value;
  }
  return p;
}

}  // namespace

std::optional<StridedRows> strided_rows(const Value& v) {
  const Node* n = v.producer;
  if (v.kind != ValueKind::kResult || n == nullptr ||
      (n->op != OpKind::kReshape && n->op != OpKind::kSlice)) {
    return StridedRows{&v, 0, 0};
  }
  const Value& x = *n->inputs[0];
  std::optional<StridedRows> in = strided_rows(x);
  if (!in) return std::nullopt;
  const Shape& xs = x.type.shape;
  const Shape& vs = v.type.shape;
  if (n->op == OpKind::kReshape) {
    if (in->contiguous()) return in;
    // Strided rows survive a reshape that keeps the rows (the first dim) and regroups within.
    if (xs.empty() || vs.empty() || !(xs[0] == vs[0])) return std::nullopt;
    return in;
  }
  int64_t axis = n->attrs.int_or("axis", 0);
  if (axis < 0) axis += static_cast<int64_t>(xs.size());
  if (axis < 0 || axis >= static_cast<int64_t>(xs.size())) return std::nullopt;
  const int64_t start = n->attrs.int_or("start", 0);
  std::optional<int64_t> inner = const_product(xs, axis + 1, xs.size());
  if (!inner) return std::nullopt;
  StridedRows out = *in;
  if (axis == 0) {
    // Whole rows: the layout stays, the start moves.
    if (in->contiguous()) {
      out.offset += start * *inner;
    } else {
      out.offset += start * in->row_stride;
    }
    return out;
  }
  // A window inside each row: rows stay whole only when nothing sits between the first axis and
  // the sliced one (a [T, N] column range, a [T, H, D] head range).
  std::optional<int64_t> between = const_product(xs, 1, axis);
  std::optional<int64_t> row = const_product(xs, 1, xs.size());
  std::optional<int64_t> width = const_product(vs, 1, vs.size());
  if (!between || *between != 1 || !row || !width) return std::nullopt;
  out.offset += start * *inner;
  if (in->contiguous()) out.row_stride = *row;
  if (out.row_stride == *width) out.row_stride = 0;  // the window is the whole row
  return out;
}

}  // namespace kiln
