// Derived plan weights: the byte ranges of their parts (see weight_parts.h).
#include "plan/weight_parts.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/checked_arithmetic.h"
#include "ir/dtype.h"

namespace kiln {
namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

}  // namespace

absl::StatusOr<std::vector<WeightByteRange>> weight_byte_ranges(const Plan& plan,
                                                                const PlanWeight& w) {
  auto bad = [&w](size_t i, const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("derived weight '", w.name, "' part ", i, ": ", why));
  };
  if (!w.derived()) {
    return absl::InvalidArgumentError(absl::StrCat("weight '", w.name, "' has no parts"));
  }
  if (w.shape.empty()) return bad(0, "a derived weight needs at least one axis");
  const SliceAxis axis = w.parts[0].axis;
  if (axis == SliceAxis::kCols && w.shape.size() != 2) {
    return bad(0, absl::StrCat("column parts make a matrix, not ", shape_str(w.shape)));
  }
  // The dims every source shares with `w`: all but the one the parts run along.
  const size_t along = axis == SliceAxis::kRows ? 0 : 1;
  auto others = [along](const std::vector<int64_t>& shape) {
    std::vector<int64_t> out;
    for (size_t d = 0; d < shape.size(); ++d) {
      if (d != along) out.push_back(d < shape.size() ? shape[d] : 0);
    }
    return out;
  };
  const int64_t block = block_elements(w.dtype);
  const uint64_t bb = static_cast<uint64_t>(block_bytes(w.dtype));
  struct Part {
    const PlanWeight* src;
    int64_t begin, end;
  };
  std::vector<Part> parts;
  int64_t extent = 0;
  for (size_t i = 0; i < w.parts.size(); ++i) {
    const PlanWeightPart& part = w.parts[i];
    if (part.axis != axis) return bad(i, "its parts mix rows and columns (one axis per weight)");
    const PlanWeight* src = plan.find_weight(part.source);
    if (src == nullptr) return bad(i, absl::StrCat("the plan has no weight '", part.source, "'"));
    if (src->derived()) return bad(i, absl::StrCat("source '", part.source, "' is itself derived"));
    if (src->dtype != w.dtype) {
      return bad(i, absl::StrCat("source '", part.source, "' is ", dtype_name(src->dtype), ", not ",
                                 dtype_name(w.dtype)));
    }
    if (src->shape.size() != w.shape.size() || others(src->shape) != others(w.shape)) {
      return bad(i, absl::StrCat("source '", part.source, "' has shape ", shape_str(src->shape),
                                 ", whose dims other than the ", slice_axis_name(axis),
                                 " differ from ", shape_str(w.shape)));
    }
    const int64_t size = src->shape[along];
    if (part.begin < 0 || part.end < part.begin || part.end > size) {
      return bad(i, absl::StrCat(slice_axis_name(axis), " [", part.begin, ", ", part.end,
                                 ") are outside '", part.source, "' (", size, " ",
                                 slice_axis_name(axis), ")"));
    }
    // The source's shape must describe its recorded bytes (a plan is read from a file: its
    // numbers are checked before they size anything).
    std::optional<int64_t> elements = 1;
    for (int64_t d : src->shape)
      elements = d < 0 || !elements ? std::nullopt : checked_mul(*elements, d);
    if (!elements || *elements % block != 0 ||
        (!src->packed() && static_cast<uint64_t>(*elements / block) * bb != src->size)) {
      return bad(i, absl::StrCat("source '", part.source, "' of shape ", shape_str(src->shape),
                                 " does not match its ", src->size, " stored bytes"));
    }
    // Values per unit of the axis that are contiguous in the stored bytes: a row's worth for
    // rows, one value for columns (whose rows each hold blocks of their own).
    int64_t unit = 1;
    if (axis == SliceAxis::kRows) {
      for (size_t d = 1; d < w.shape.size(); ++d) unit *= w.shape[d];  // <= elements: no overflow
    } else if (src->shape[1] % block != 0) {
      return bad(i, absl::StrCat("source '", part.source, "' rows are not whole ",
                                 dtype_name(w.dtype), " blocks"));
    }
    if ((part.begin * unit) % block != 0 || ((part.end - part.begin) * unit) % block != 0) {
      return bad(i,
                 absl::StrCat(slice_axis_name(axis), " [", part.begin, ", ", part.end, ") split a ",
                              dtype_name(w.dtype), " block of ", block, " values"));
    }
    parts.push_back({src, part.begin * unit / block, part.end * unit / block});
    extent += part.end - part.begin;
  }
  if (extent != w.shape[along]) {
    return absl::InvalidArgumentError(absl::StrCat(
        "derived weight '", w.name, "': its parts hold ", extent, " ", slice_axis_name(axis),
        ", its shape ", shape_str(w.shape), " needs ", w.shape[along]));
  }
  std::vector<WeightByteRange> out;
  if (axis == SliceAxis::kRows) {
    for (const Part& p : parts) {
      out.push_back({p.src, static_cast<uint64_t>(p.begin) * bb,
                     static_cast<uint64_t>(p.end - p.begin) * bb});
    }
    return out;
  }
  // Columns: row r of each part in turn. p.begin / p.end count blocks within a source row.
  const int64_t rows = w.shape[0];
  out.reserve(static_cast<size_t>(rows) * parts.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (const Part& p : parts) {
      const int64_t row_blocks = p.src->shape[1] / block;
      out.push_back({p.src, static_cast<uint64_t>(r * row_blocks + p.begin) * bb,
                     static_cast<uint64_t>(p.end - p.begin) * bb});
    }
  }
  return out;
}

}  // namespace kiln
