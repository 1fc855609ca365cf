// Parsing and application of tokenizer.json normalizers.
#include "models/normalizer.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "models/json_sequence.h"
#include "models/unicode.h"

namespace kiln {
namespace {

using json = nlohmann::json;

absl::StatusOr<std::string> string_field(const json& j, const char* key, std::string_view where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(where), " needs a string '", key, "'"));
  }
  return it->get<std::string>();
}

}  // namespace

absl::StatusOr<Normalizer> Normalizer::from_json(const json& j, std::string_view src) {
  const std::string what = absl::StrCat(std::string(src), ": normalizer");
  absl::StatusOr<std::vector<const json*>> leaves = flatten_sequence(j, "normalizers", what);
  if (!leaves.ok()) return leaves.status();
  std::vector<Step> steps;
  for (const json* n : *leaves) {
    const std::string type = json_type(*n);
    if (type == "Prepend") {
      absl::StatusOr<std::string> p = string_field(*n, "prepend", what + " Prepend");
      if (!p.ok()) return p.status();
      steps.push_back({StepKind::kPrepend, *p, ""});
    } else if (type == "Replace") {
      auto pat = n->find("pattern");
      if (pat == n->end() || !pat->is_object() || !pat->contains("String") ||
          !(*pat)["String"].is_string()) {
        return absl::UnimplementedError(absl::StrCat(
            what, " Replace with pattern ",
            (pat == n->end() ? std::string("(none)") : describe_json(*pat)),
            " is not supported (only {\"String\": ...} patterns; regex patterns are not)"));
      }
      absl::StatusOr<std::string> content = string_field(*n, "content", what + " Replace");
      if (!content.ok()) return content.status();
      const std::string from = (*pat)["String"].get<std::string>();
      if (from.empty()) return absl::InvalidArgumentError(what + " Replace of an empty string");
      steps.push_back({StepKind::kReplace, from, *content});
    } else if (type == "NFC") {
      steps.push_back({StepKind::kNfc, "", ""});
    } else if (type == "NFD") {
      steps.push_back({StepKind::kNfd, "", ""});
    } else if (type == "NFKC") {
      steps.push_back({StepKind::kNfkc, "", ""});
    } else if (type == "NFKD") {
      steps.push_back({StepKind::kNfkd, "", ""});
    } else {
      return absl::UnimplementedError(absl::StrCat(
          what, " ", describe_json(*n),
          " is not supported; supported: Prepend, Replace (string pattern), NFC, NFD, NFKC, NFKD, "
          "and Sequences of them"));
    }
  }
  return Normalizer(std::move(steps));
}

std::string Normalizer::apply(std::string_view text) const {
  std::string s(text);
  for (const Step& step : steps_) {
    switch (step.kind) {
      case StepKind::kPrepend:
        if (!s.empty()) s.insert(0, step.a);
        break;
      case StepKind::kReplace: s = absl::StrReplaceAll(s, {{step.a, step.b}}); break;
      case StepKind::kNfc: s = unicode::normalize(s, unicode::NormalForm::kNfc); break;
      case StepKind::kNfd: s = unicode::normalize(s, unicode::NormalForm::kNfd); break;
      case StepKind::kNfkc: s = unicode::normalize(s, unicode::NormalForm::kNfkc); break;
      case StepKind::kNfkd: s = unicode::normalize(s, unicode::NormalForm::kNfkd); break;
    }
  }
  return s;
}

}  // namespace kiln
