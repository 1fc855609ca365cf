// A value's type: element dtype plus a (possibly symbolic) shape, printed as `bf16[T,576]`.
#pragma once

#include <string>

#include "ir/dtype.h"
#include "ir/shape.h"

namespace kiln {

struct Type {
  DType dtype = DType::kF32;
  Shape shape;

  int rank() const { return static_cast<int>(shape.size()); }
  bool operator==(const Type&) const = default;
  std::string to_string() const;
};

}  // namespace kiln
