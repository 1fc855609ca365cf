// Parser for the IR text form printed by ir/printer.h. Errors read
// "<line>:<col>: expected <what>, got <token>" and never crash on malformed text.
#pragma once

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace kiln {

/// Parses one `graph @name { ... }`. Types are taken as declared; run the verifier to check them.
absl::StatusOr<std::unique_ptr<Graph>> parse_graph(std::string_view text);

}  // namespace kiln
