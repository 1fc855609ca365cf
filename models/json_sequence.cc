// Iterative flattening of tokenizer.json Sequences and depth-safe JSON descriptions.
#include "models/json_sequence.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace kiln {
namespace {

using json = nlohmann::json;

// Whether `j` nests deeper than `limit` levels, found without recursion.
bool deeper_than(const json& j, int limit) {
  std::vector<std::pair<const json*, int>> stack = {{&j, 0}};
  while (!stack.empty()) {
    auto [node, depth] = stack.back();
    stack.pop_back();
    if (depth > limit) return true;
    if (node->is_structured()) {
      for (const json& child : *node) stack.push_back({&child, depth + 1});
    }
  }
  return false;
}

}  // namespace

std::string json_type(const json& j) {
  if (!j.is_object()) return "";
  auto it = j.find("type");
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

std::string describe_json(const json& j, size_t max_chars) {
  if (deeper_than(j, 16)) {
    const std::string type = json_type(j);
    return absl::StrCat("{\"type\": \"", type.empty() ? "?" : type,
                        "\", ...} (nested too deep to show)");
  }
  std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > max_chars ? s.substr(0, max_chars) + "..." : s;
}

absl::StatusOr<std::vector<const json*>> flatten_sequence(const json& j, std::string_view list_key,
                                                          std::string_view what) {
  std::vector<const json*> leaves;
  // Depth-first, in order, with an explicit stack: (node, depth).
  std::vector<std::pair<const json*, int>> stack = {{&j, 0}};
  while (!stack.empty()) {
    auto [node, depth] = stack.back();
    stack.pop_back();
    if (node->is_null()) continue;
    if (!node->is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(what), ": expected an object, got ", describe_json(*node)));
    }
    if (json_type(*node) != "Sequence") {
      leaves.push_back(node);
      continue;
    }
    if (depth >= kMaxSequenceDepth) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(what), ": Sequences nested more than ", kMaxSequenceDepth,
                       " deep; real tokenizers nest one or two levels (the file is malformed)"));
    }
    auto list = node->find(std::string(list_key));
    if (list == node->end() || !list->is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(
          std::string(what), ": a Sequence without an array '", std::string(list_key), "'"));
    }
    for (auto it = list->rbegin(); it != list->rend(); ++it) stack.push_back({&*it, depth + 1});
  }
  return leaves;
}

}  // namespace kiln
