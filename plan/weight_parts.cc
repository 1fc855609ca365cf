#include "plan/weight_parts.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
  std::vector<int64_t> trailing(w.shape.begin() + 1, w.shape.end());
  int64_t row_elems = 1;
  for (int64_t d : trailing) row_elems *= d;
  const int64_t block = block_elements(w.dtype);
  std::vector<WeightByteRange> out;
  int64_t rows = 0;
  for (size_t i = 0; i < w.parts.size(); ++i) {
    const PlanWeightPart& part = w.parts[i];
    const PlanWeight* src = plan.find_weight(part.source);
    if (src == nullptr) return bad(i, absl::StrCat("the plan has no weight '", part.source, "'"));
    if (src->derived()) return bad(i, absl::StrCat("source '", part.source, "' is itself derived"));
    if (src->dtype != w.dtype) {
      return bad(i, absl::StrCat("source '", part.source, "' is ", dtype_name(src->dtype), ", not ",
                                 dtype_name(w.dtype)));
    }
    if (src->shape.empty() ||
        std::vector<int64_t>(src->shape.begin() + 1, src->shape.end()) != trailing) {
      return bad(i, absl::StrCat("source '", part.source, "' has shape ", shape_str(src->shape),
                                 ", whose trailing dims differ from ", shape_str(w.shape)));
    }
    if (part.row_begin < 0 || part.row_end < part.row_begin || part.row_end > src->shape[0]) {
      return bad(i, absl::StrCat("rows [", part.row_begin, ", ", part.row_end, ") are outside '",
                                 part.source, "' (", src->shape[0], " rows)"));
    }
    const int64_t begin_elems = part.row_begin * row_elems;
    const int64_t elems = (part.row_end - part.row_begin) * row_elems;
    if (begin_elems % block != 0 || elems % block != 0) {
      return bad(i, absl::StrCat("rows [", part.row_begin, ", ", part.row_end, ") split a ",
                                 dtype_name(w.dtype), " block of ", block, " values"));
    }
    const uint64_t bb = static_cast<uint64_t>(block_bytes(w.dtype));
    out.push_back({src, static_cast<uint64_t>(begin_elems / block) * bb,
                   static_cast<uint64_t>(elems / block) * bb});
    rows += part.row_end - part.row_begin;
  }
  if (rows != w.shape[0]) {
    return absl::InvalidArgumentError(absl::StrCat("derived weight '", w.name, "': its parts hold ",
                                                   rows, " rows, its shape ", shape_str(w.shape),
                                                   " needs ", w.shape[0]));
  }
  return out;
}

}  // namespace kiln
