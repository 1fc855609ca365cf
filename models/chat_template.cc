// Compiles and renders Jinja chat templates with the vendored minja engine (third_party/minja).
#include "models/chat_template.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <exception>
#include <iomanip>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "minja/minja.hpp"
#include "models/tokenizer.h"

namespace kiln {
namespace {

constexpr size_t kMaxTemplateBytes = size_t{1} << 20;
constexpr int kMaxBlockDepth = 64;
constexpr int kMaxBracketDepth = 256;

// transformers' default before templates shipped with models, and what kiln used for ChatML.
constexpr std::string_view kChatMl =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' "
    "}}{% endif %}";

// minja's parser recurses once per nested block and bracket, so nesting is bounded before it
// runs. Counts every bracket (string literals included), which over-approximates safely; real
// templates stay far below both limits.
absl::Status check_nesting(std::string_view t) {
  int brackets = 0, blocks = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (c == '(' || c == '[' || c == '{') {
      if (++brackets > kMaxBracketDepth) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "chat template: brackets nested more than %d deep (at byte %d)", kMaxBracketDepth, i));
      }
    } else if (c == ')' || c == ']' || c == '}') {
      brackets = std::max(0, brackets - 1);
    }
    if (c != '{' || i + 1 >= t.size() || t[i + 1] != '%') continue;
    size_t k = i + 2;
    while (k < t.size() && (t[k] == '-' || t[k] == '+' || t[k] == ' ' || t[k] == '\t' ||
                            t[k] == '\n' || t[k] == '\r')) {
      ++k;
    }
    size_t e = k;
    while (e < t.size() && (std::isalpha(static_cast<unsigned char>(t[e])) || t[e] == '_')) ++e;
    const std::string_view tag = t.substr(k, e - k);
    const size_t close = t.find("%}", e);
    const std::string_view body =
        t.substr(e, close == std::string_view::npos ? std::string_view::npos : close - e);
    const bool opens = tag == "if" || tag == "for" || tag == "macro" || tag == "call" ||
                       tag == "filter" || tag == "generation" ||
                       (tag == "set" && body.find('=') == std::string_view::npos);
    if (opens && ++blocks > kMaxBlockDepth) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "chat template: blocks ({%% %s %%}) nested more than %d deep (at byte %d)",
          std::string(tag), kMaxBlockDepth, i));
    }
    if (tag.starts_with("end")) blocks = std::max(0, blocks - 1);
  }
  return absl::OkStatus();
}

// The filters a template applies (`x | name`), found in its {{ }} and {% %} tags outside string
// literals. minja reports an unknown filter only as "Value is not callable: null", so kiln checks
// them by name before rendering.
std::vector<std::string> filter_names(std::string_view t) {
  std::vector<std::string> names;
  bool in_code = false;
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (!in_code) {
      if (c == '{' && i + 1 < t.size() && (t[i + 1] == '{' || t[i + 1] == '%')) {
        in_code = true;
        ++i;
      }
      continue;
    }
    if ((c == '}' || c == '%') && i + 1 < t.size() && t[i + 1] == '}') {
      in_code = false;
      ++i;
    } else if (c == '\'' || c == '"') {
      for (++i; i < t.size() && t[i] != c; ++i) {
        if (t[i] == '\\') ++i;
      }
    } else if (c == '|') {
      size_t k = i + 1;
      while (k < t.size() && (t[k] == ' ' || t[k] == '\t' || t[k] == '\n')) ++k;
      size_t e = k;
      while (e < t.size() && (std::isalnum(static_cast<unsigned char>(t[e])) || t[e] == '_')) ++e;
      if (e > k) names.emplace_back(t.substr(k, e - k));
      i = e - 1;
    }
  }
  return names;
}

// minja's messages are "<what> at row R, column C:\n<excerpt>"; kiln keeps the first line and
// names the word of the template at that position (the construct the engine stopped at).
std::string engine_error(std::string_view source, const std::string& what) {
  std::string first = what.substr(0, what.find('\n'));
  if (first.size() > 300) first = first.substr(0, 300) + "...";
  int row = 0, col = 0;
  const size_t at = first.rfind(" at row ");
  if (at == std::string::npos ||
      std::sscanf(first.c_str() + at, " at row %d, column %d", &row, &col) != 2) {
    return first;
  }
  if (first.back() == ':') first.pop_back();
  size_t pos = 0;
  for (int r = 1; r < row && pos != std::string_view::npos; ++r) {
    pos = source.find('\n', pos);
    if (pos != std::string_view::npos) ++pos;
  }
  if (pos == std::string_view::npos || col < 1) return first;
  pos += static_cast<size_t>(col - 1);
  while (pos < source.size() && source[pos] == ' ') ++pos;
  size_t e = pos;
  while (e < source.size() && e - pos < 40 &&
         (std::isalnum(static_cast<unsigned char>(source[e])) || source[e] == '_')) {
    ++e;
  }
  if (e == pos) return first;
  return absl::StrCat(first, " (at '", std::string(source.substr(pos, e - pos)), "')");
}

std::string strftime_now(const std::string& format) {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm local{};
  localtime_r(&now, &local);
  std::ostringstream ss;
  ss << std::put_time(&local, format.c_str());
  return ss.str();
}

}  // namespace

std::string_view ChatTemplate::chatml_template() { return kChatMl; }

absl::StatusOr<ChatTemplate> ChatTemplate::compile(std::string_view jinja,
                                                   ChatTemplateTokens tokens) {
  if (jinja.size() > kMaxTemplateBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "chat template: %d bytes, over the %d-byte limit", jinja.size(), kMaxTemplateBytes));
  }
  if (absl::Status s = check_nesting(jinja); !s.ok()) return s;
  ChatTemplate t;
  t.source_ = std::string(jinja);
  t.tokens_ = std::move(tokens);
  try {
    // transformers' environment: trim_blocks and lstrip_blocks on; jinja2 drops a single
    // trailing newline by default.
    t.root_ = minja::Parser::parse(t.source_, minja::Options{/*trim_blocks=*/true,
                                                             /*lstrip_blocks=*/true,
                                                             /*keep_trailing_newline=*/false});
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template does not parse: ", engine_error(t.source_, e.what())));
  }
  if (t.root_ == nullptr) return absl::InvalidArgumentError("chat template does not parse");
  const std::shared_ptr<minja::Context> builtins = minja::Context::builtins();
  for (const std::string& f : filter_names(t.source_)) {
    if (!builtins->contains(minja::Value(f))) {
      return absl::InvalidArgumentError(
          absl::StrCat("chat template uses the filter '", f,
                       "', which kiln's Jinja engine (minja) does not provide"));
    }
  }
  return t;
}

absl::StatusOr<ChatTemplate> ChatTemplate::for_tokenizer(const Tokenizer& tokenizer) {
  ChatTemplateTokens tokens;
  if (tokenizer.bos_id() >= 0)
    tokens.bos_token = std::string(tokenizer.token_text(tokenizer.bos_id()));
  if (tokenizer.eos_id() >= 0)
    tokens.eos_token = std::string(tokenizer.token_text(tokenizer.eos_id()));
  std::string_view source = tokenizer.chat_template();
  if (source.empty()) {
    if (!tokenizer.token_id("<|im_start|>").has_value()) {
      return absl::NotFoundError(
          "the model has no chat template and its vocabulary has no <|im_start|>; kiln cannot "
          "choose a chat format (use a raw prompt instead)");
    }
    source = kChatMl;
  }
  return compile(source, std::move(tokens));
}

absl::StatusOr<std::string> ChatTemplate::render(absl::Span<const ChatMessage> messages,
                                                 bool add_generation_prompt) const {
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) {
    msgs.push_back({{"role", m.role}, {"content", m.content}});
  }
  try {
    auto context = minja::Context::make(minja::Value(nlohmann::ordered_json{
        {"messages", std::move(msgs)},
        {"add_generation_prompt", add_generation_prompt},
        {"bos_token", tokens_.bos_token},
        {"eos_token", tokens_.eos_token},
    }));
    context->set("strftime_now",
                 minja::Value::callable([](const std::shared_ptr<minja::Context>&,
                                           minja::ArgumentsValue& args) -> minja::Value {
                   args.expectArgs("strftime_now", {1, 1}, {0, 0});
                   return minja::Value(strftime_now(args.args[0].get<std::string>()));
                 }));
    return root_->render(context);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template: ", engine_error(source_, e.what())));
  }
}

std::vector<std::string> ChatTemplate::stop_tokens() const {
  std::vector<std::string> out;
  for (std::string_view s :
       {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>"}) {
    if (source_.find(s) != std::string::npos) out.emplace_back(s);
  }
  // Templates that end a turn with eos_token ([INST] styles) stop at EOS, which stop_ids adds.
  return out;
}

std::vector<int32_t> ChatTemplate::stop_ids(const Tokenizer& tokenizer) const {
  std::vector<int32_t> ids;
  for (const std::string& s : stop_tokens()) {
    std::optional<int32_t> id = tokenizer.token_id(s);
    if (id && std::find(ids.begin(), ids.end(), *id) == ids.end()) ids.push_back(*id);
  }
  for (int32_t id : tokenizer.stop_ids()) {
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  }
  return ids;
}

}  // namespace kiln
