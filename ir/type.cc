// Type printing.
#include "ir/type.h"

#include "absl/strings/str_cat.h"

namespace kiln {

std::string Type::to_string() const {
  return absl::StrCat(dtype_name(dtype), shape_to_string(shape));
}

}  // namespace kiln
