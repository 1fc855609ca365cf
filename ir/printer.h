// The IR's text form (MLIR-like, one op per line), e.g.
//   %12, %13 = rmsnorm_residual(%10, %11, @layers.0.mlp_norm) {eps = 1e-05} : bf16[T,576],
//   bf16[T,576]
// Unnamed results are numbered in program order, so printing is deterministic and
// print(parse(print(g))) == print(g).
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "ir/graph.h"

namespace kiln {

/// Names of a graph's values as printed: `%tokens`, `@embed`, `%7`.
class ValueNames {
 public:
  explicit ValueNames(const Graph& graph);
  std::string operator()(const Value* value) const;

 private:
  std::unordered_map<const Value*, std::string> names_;
};

std::string print_graph(const Graph& graph);
/// A derived param's part list as printed after `=`: `rows("q"[0:4], "k"[0:2])`,
/// `cols("o"[0:32])`.
std::string print_param_parts(const std::vector<ParamPart>& parts);
/// One node's line (without indentation), with names as in print_graph.
std::string print_node(const Node& node, const ValueNames& names);

/// True for a name the text form accepts after % or @ ([A-Za-z0-9_.]+).
bool is_valid_value_name(std::string_view name);

}  // namespace kiln
