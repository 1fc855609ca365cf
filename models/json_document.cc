// parse_json_document: nlohmann's parser behind a Status, with positions and a depth bound.
#include "models/json_document.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"

namespace kiln {
namespace {

// 1-based line and column of byte `offset` in `text`.
std::pair<size_t, size_t> line_and_column(std::string_view text, size_t offset) {
  offset = std::min(offset, text.size());
  size_t line = 1, line_start = 0;
  for (size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return {line, offset - line_start + 1};
}

}  // namespace

absl::StatusOr<nlohmann::json> parse_json_document(std::string_view text, std::string_view source,
                                                   std::string* duplicate_key) {
  using nlohmann::json;
  std::set<std::string> seen;
  bool too_deep = false;
  // The callback sees every value as it is parsed: it stops deep nesting early (the parser itself
  // is iterative; the walks that come after are not) and records repeated top-level keys.
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > kMaxJsonDepth) {
      too_deep = true;
      return false;
    }
    if (duplicate_key != nullptr && event == json::parse_event_t::key && depth == 1 &&
        parsed.is_string()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!seen.insert(k).second && duplicate_key->empty()) *duplicate_key = k;
    }
    return true;
  };
  json out;
  try {
    out = json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true);
  } catch (const json::parse_error& e) {
    // e.byte is 1-based: the position of the byte where the parser gave up.
    const size_t offset = e.byte > 0 ? e.byte - 1 : 0;
    auto [line, column] = line_and_column(text, offset);
    std::string reason = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 2: syntax error ..." ->
    // keep only the part after the position nlohmann repeats.
    if (size_t colon = reason.find(": "); colon != std::string::npos) reason.erase(0, colon + 2);
    // nlohmann quotes the last token it read, which can be a megabyte-long string.
    if (reason.size() > 200) reason = absl::StrCat(reason.substr(0, 200), "...");
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": not valid JSON at line ",
                                                   line, ", column ", column, " (byte ", offset,
                                                   "): ", reason));
  } catch (const json::exception& e) {
    // e.g. out_of_range.406 "number overflow parsing '1e999'": no position, keep the reason.
    std::string reason = e.what();
    if (size_t bracket = reason.find("] "); bracket != std::string::npos)
      reason.erase(0, bracket + 2);
    if (reason.size() > 200) reason = absl::StrCat(reason.substr(0, 200), "...");
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(source), ": not valid JSON: ", reason));
  }
  if (too_deep) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ": JSON nested more than ",
                                                   kMaxJsonDepth, " levels deep"));
  }
  return out;
}

}  // namespace kiln
