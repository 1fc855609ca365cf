// A minimal parser for fused_elementwise's `expr` attribute ($N, float literals, add sub mul div
// neg exp rsqrt silu), laid out like ir/expr.h (branch `reference`) so codegen can switch to that
// one when it lands on main: nodes in post-order, root last.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln {

class ElementwiseExpr {
 public:
  enum class Kind : uint8_t { kInput, kLiteral, kAdd, kSub, kMul, kDiv, kNeg, kExp, kRsqrt, kSilu };
  struct Node {
    Kind kind = Kind::kLiteral;
    int input = 0;           // kInput: N of `$N`
    double literal = 0;      // kLiteral
    int args[2] = {-1, -1};  // operand node indices
  };

  /// Parses `text`; errors read "expr:<col>: expected <what>, got <token>".
  static absl::StatusOr<ElementwiseExpr> parse(std::string_view text);
  const std::vector<Node>& nodes() const { return nodes_; }
  int max_input_index() const { return max_input_; }

 private:
  std::vector<Node> nodes_;
  int max_input_ = -1;
};

}  // namespace kiln
