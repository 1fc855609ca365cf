// ChatML and Llama-3 prompt rendering, and detection of the family from a Jinja template.
#include "models/chat_template.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "models/tokenizer.h"

namespace kiln {
namespace {

// The default system prompt a ChatML template hard-codes, as in SmolLM2's:
//   {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are ...
//   <|im_end|>\n' }}{% endif %}
// Found as the literal text between "<|im_start|>system\n" and "<|im_end|>" in the template.
std::string find_default_system_prompt(std::string_view jinja) {
  constexpr std::string_view kOpen = "<|im_start|>system\n";
  const size_t a = jinja.find(kOpen);
  if (a == std::string_view::npos) return "";
  const size_t start = a + kOpen.size();
  const size_t end = jinja.find("<|im_end|>", start);
  if (end == std::string_view::npos) return "";
  std::string_view prompt = jinja.substr(start, end - start);
  // Only a literal: anything that looks like Jinja means the prompt comes from the messages.
  if (prompt.empty() || prompt.find_first_of("{}'\"+") != std::string_view::npos) return "";
  return std::string(prompt);
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::detect(std::string_view jinja, bool vocab_has_im_start) {
  if (jinja.find("<|im_start|>") != std::string_view::npos) {
    return ChatTemplate(ChatTemplateKind::kChatMl, find_default_system_prompt(jinja));
  }
  if (jinja.find("<|start_header_id|>") != std::string_view::npos) {
    return ChatTemplate(ChatTemplateKind::kLlama3);
  }
  if (jinja.empty()) {
    if (vocab_has_im_start) return ChatTemplate(ChatTemplateKind::kChatMl);
    return absl::NotFoundError(
        "the model has no chat template and its vocabulary has no <|im_start|>; kiln cannot "
        "choose a chat format (use a raw prompt instead)");
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unrecognized chat template (kiln renders ChatML (<|im_start|>) and Llama-3 "
                   "(<|start_header_id|>) templates); it begins: ",
                   std::string(jinja.substr(0, 120))));
}

absl::StatusOr<ChatTemplate> ChatTemplate::for_tokenizer(const Tokenizer& tokenizer) {
  return detect(tokenizer.chat_template(), tokenizer.token_id("<|im_start|>").has_value());
}

std::string ChatTemplate::render(absl::Span<const ChatMessage> messages,
                                 bool add_generation_prompt) const {
  std::string out;
  switch (kind_) {
    case ChatTemplateKind::kChatMl:
      if (!default_system_prompt_.empty() && (messages.empty() || messages[0].role != "system")) {
        // SmolLM2's template inserts its prompt inside the message loop (loop.first), so an empty
        // conversation gets none.
        if (!messages.empty()) {
          absl::StrAppend(&out, "<|im_start|>system\n", default_system_prompt_, "<|im_end|>\n");
        }
      }
      for (const ChatMessage& m : messages) {
        absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
      }
      if (add_generation_prompt) out.append("<|im_start|>assistant\n");
      break;
    case ChatTemplateKind::kLlama3:
      // Llama-3's template trims each message's content.
      out.append("<|begin_of_text|>");
      for (const ChatMessage& m : messages) {
        absl::StrAppend(&out, "<|start_header_id|>", m.role, "<|end_header_id|>\n\n",
                        absl::StripAsciiWhitespace(m.content), "<|eot_id|>");
      }
      if (add_generation_prompt) out.append("<|start_header_id|>assistant<|end_header_id|>\n\n");
      break;
  }
  return out;
}

std::vector<std::string> ChatTemplate::stop_tokens() const {
  switch (kind_) {
    case ChatTemplateKind::kChatMl: return {"<|im_end|>"};
    case ChatTemplateKind::kLlama3: return {"<|eot_id|>"};
  }
  return {};
}

std::vector<int32_t> ChatTemplate::stop_ids(const Tokenizer& tokenizer) const {
  std::vector<int32_t> ids;
  for (const std::string& s : stop_tokens()) {
    if (std::optional<int32_t> id = tokenizer.token_id(s)) ids.push_back(*id);
  }
  for (int32_t id : tokenizer.stop_ids()) {
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  }
  return ids;
}

}  // namespace kiln
