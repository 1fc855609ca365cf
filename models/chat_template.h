// Chat templates (ChatML, Llama-3) chosen from a model's Jinja template, rendered natively.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kiln {

class Tokenizer;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

enum class ChatTemplateKind {
  kChatMl,  // <|im_start|>role\ncontent<|im_end|>\n
  kLlama3,  // <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
};

/// A chat format kiln renders itself. kiln does not run Jinja: it recognizes the family of the
/// model's template by its markers and reproduces that family's output (including a default
/// system prompt the template hard-codes, as SmolLM2's does).
class ChatTemplate {
 public:
  /// Picks the format from a Jinja template: `<|im_start|>` -> ChatML, `<|start_header_id|>` ->
  /// Llama-3. With an empty template, ChatML when `vocab_has_im_start`, else an error.
  static absl::StatusOr<ChatTemplate> detect(std::string_view jinja, bool vocab_has_im_start);
  /// detect() on the tokenizer's own chat template and vocabulary.
  static absl::StatusOr<ChatTemplate> for_tokenizer(const Tokenizer& tokenizer);
  explicit ChatTemplate(ChatTemplateKind kind, std::string default_system_prompt = "")
      : kind_(kind), default_system_prompt_(std::move(default_system_prompt)) {}

  /// The prompt text for `messages`; with `add_generation_prompt`, ends with the header that
  /// starts the assistant's reply. Encode it with parse_special = true and without BOS (the
  /// Llama-3 rendering already starts with <|begin_of_text|>).
  std::string render(absl::Span<const ChatMessage> messages, bool add_generation_prompt) const;
  /// Token texts that end an assistant turn ("<|im_end|>", "<|eot_id|>").
  std::vector<std::string> stop_tokens() const;
  /// Ids of stop_tokens() in `tokenizer`'s vocabulary plus its EOS-like stop ids.
  std::vector<int32_t> stop_ids(const Tokenizer& tokenizer) const;

  ChatTemplateKind kind() const { return kind_; }
  /// System prompt inserted when the conversation does not start with one (empty: none).
  const std::string& default_system_prompt() const { return default_system_prompt_; }

 private:
  ChatTemplateKind kind_;
  std::string default_system_prompt_;
};

}  // namespace kiln
