// tokenizer.json's nested `Sequence` components flattened under a nesting limit, and short JSON
// descriptions for error messages (never a recursive dump of a hostile document).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kiln {

/// How deep `Sequence`s may nest in a normalizer, pre_tokenizer or decoder. Real files nest one
/// or two levels; the limit keeps hostile files from exhausting the stack or the time budget.
inline constexpr int kMaxSequenceDepth = 64;

/// The leaves of a component that may be a `{"type": "Sequence", "<list_key>": [...]}` of
/// components (nested Sequences are flattened in order). A null component gives no leaves.
/// `what` names the component in errors ("pre_tokenizer"); a Sequence nested deeper than
/// kMaxSequenceDepth, a missing list or a non-object element is an error.
absl::StatusOr<std::vector<const nlohmann::json*>> flatten_sequence(const nlohmann::json& j,
                                                                    std::string_view list_key,
                                                                    std::string_view what);

/// `j` as compact JSON, cut to about `max_chars`; a document nested deeper than 16 levels is
/// summarized by its type instead (dump() recurses once per level).
std::string describe_json(const nlohmann::json& j, size_t max_chars = 200);

/// The `type` string of a JSON object, or "".
std::string json_type(const nlohmann::json& j);

}  // namespace kiln
