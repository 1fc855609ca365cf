// Launch-rule expressions: the integer arithmetic over the step's symbols (T, S, K, ...) in which
// a plan states grids, blocks, workspace sizes and integer launch arguments. Codegen writes them,
// the runtime evaluates them once per step. Grammar:
//   expr = term (('+' | '-') term)*      term = atom ('*' atom)*
//   atom = integer | symbol | '(' expr ')' | cdiv(expr, expr) | min(expr, expr) | max(expr, expr)
// Every operation is checked for int64 overflow: a plan can never launch a wrapped-around grid.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "plan/plan.h"

namespace kiln {

/// The step's symbol values, e.g. {{"T", 118}, {"S", 3}, {"K", 700}}.
using LaunchSymbols = std::vector<std::pair<std::string, int64_t>>;

/// Evaluates `expr`; errors name the expression and the column, an unbound symbol, a division by
/// a non-positive number or an overflow.
absl::StatusOr<int64_t> eval_launch_expr(std::string_view expr, const LaunchSymbols& symbols);

/// A LaunchRule evaluated for one step.
struct LaunchGeometry {
  std::array<int64_t, 3> grid = {1, 1, 1};
  std::array<int64_t, 3> block = {1, 1, 1};
  int64_t dynamic_shared_bytes = 0;
};

/// Evaluates every expression of `rule`; each grid and block extent must come out >= 1 (a grid
/// of 0 means the launch would silently do nothing), shared bytes >= 0.
absl::StatusOr<LaunchGeometry> eval_launch_rule(const LaunchRule& rule,
                                                const LaunchSymbols& symbols);

}  // namespace kiln
