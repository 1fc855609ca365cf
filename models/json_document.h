// Parsing a JSON file that came from a user (config.json, safetensors headers and indexes): one
// call that never throws, bounds the nesting depth and says where the text stops being JSON.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kiln {

/// Deeper than any real config or header (they nest 3-4 levels); deep enough nesting would make
/// every recursive walk of the document (dump, comparison) overflow the stack.
inline constexpr int kMaxJsonDepth = 64;

/// Parses `text` as JSON. Errors are prefixed with `source` and say where parsing stopped:
/// "x/config.json: not valid JSON at line 3, column 7 (byte 45): syntax error ... unexpected '}'".
/// `duplicate_key`, when given, receives the first repeated key of the top-level object (nlohmann
/// would otherwise keep the last value silently).
absl::StatusOr<nlohmann::json> parse_json_document(std::string_view text, std::string_view source,
                                                   std::string* duplicate_key = nullptr);

}  // namespace kiln
