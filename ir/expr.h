// The expression language of `fused_elementwise`: `$0`, `$1`, float literals and calls of
// add sub mul div neg exp rsqrt silu, e.g. `mul(silu($0), $1)`. Parser, canonical printer,
// evaluator; codegen emits the same DAG as CUDA.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kiln {

/// Deepest call nesting an expression may have (bounds the parser's recursion on hostile input);
/// fuse-elementwise keeps the expressions it builds within it.
inline constexpr int kMaxExprDepth = 200;

/// A parsed expression, stored as nodes in post-order (children before parents; root last), so
/// evaluation is one forward sweep and codegen can emit one SSA line per node.
class Expr {
 public:
  enum class Kind : uint8_t { kInput, kLiteral, kAdd, kSub, kMul, kDiv, kNeg, kExp, kRsqrt, kSilu };
  struct Node {
    Kind kind = Kind::kLiteral;
    int input = 0;           // kInput: the index N of `$N`
    double literal = 0;      // kLiteral
    int args[2] = {-1, -1};  // operand node indices (unary ops use args[0])
  };

  /// Parses `text`. Errors read "expr:<col>: expected <what>, got <token>" (1-based column).
  static absl::StatusOr<Expr> parse(std::string_view text);

  /// Canonical text: no redundant spaces, ", " between arguments, shortest round-trip literals.
  /// parse(e.to_string()) yields an equal expression.
  std::string to_string() const;
  /// The largest `$N` used, or -1 for an expression without inputs.
  int max_input_index() const { return max_input_; }
  const std::vector<Node>& nodes() const { return nodes_; }

  /// Evaluates in fp32. `inputs[i]` is `$i`; `scratch` holds at least nodes().size() floats.
  float eval(const float* inputs, float* scratch) const;

  /// Name of a call kind ("silu"); "" for inputs and literals.
  static const char* call_name(Kind kind);
  static int arity(Kind kind);

 private:
  std::vector<Node> nodes_;
  int max_input_ = -1;
};

/// The verifier-facing check: `text` parses and uses only `$0 .. $(num_inputs-1)`.
absl::Status validate_expr(std::string_view text, int num_inputs);

}  // namespace kiln
