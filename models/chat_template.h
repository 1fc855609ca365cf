// Chat templates: the model's own Jinja `chat_template`, rendered by a Jinja engine (minja) with
// the environment and globals transformers' apply_chat_template uses.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace minja {
class TemplateNode;
}

namespace kiln {

class Tokenizer;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

/// The special-token texts a template sees as `bos_token` / `eos_token` (empty: not defined).
struct ChatTemplateTokens {
  std::string bos_token;
  std::string eos_token;
};

/// A compiled chat template. Rendering follows transformers: trim_blocks and lstrip_blocks on,
/// the globals `raise_exception` and `strftime_now`, and the variables `messages`,
/// `add_generation_prompt`, `bos_token` and `eos_token`. Immutable; copies share the template.
class ChatTemplate {
 public:
  /// Parses `jinja`. A syntax error or a construct the engine does not know is an error naming
  /// it; so is a template over 1 MiB or nested deeper than 64 blocks or 256 brackets (hostile
  /// files must not exhaust the parser's stack).
  static absl::StatusOr<ChatTemplate> compile(std::string_view jinja, ChatTemplateTokens tokens);
  /// The tokenizer's own chat template, with its BOS/EOS texts. A model without one gets ChatML
  /// when its vocabulary has <|im_start|> (as transformers' old default), else an error.
  static absl::StatusOr<ChatTemplate> for_tokenizer(const Tokenizer& tokenizer);
  /// The ChatML template kiln falls back to.
  static std::string_view chatml_template();

  /// The prompt text for `messages`; with `add_generation_prompt`, ends with what starts the
  /// assistant's reply. Encode it with parse_special = true and add_bos = false (templates write
  /// their own BOS, as apply_chat_template's output is tokenized without special tokens). A
  /// template's raise_exception (e.g. roles that do not alternate) or an evaluation error is
  /// returned as InvalidArgument with the template's message.
  absl::StatusOr<std::string> render(absl::Span<const ChatMessage> messages,
                                     bool add_generation_prompt) const;
  /// End-of-turn token texts the template writes ("<|im_end|>", "<|eot_id|>", "<end_of_turn>",
  /// ...), found in its source.
  std::vector<std::string> stop_tokens() const;
  /// Ids of stop_tokens() in `tokenizer`'s vocabulary plus its EOS-like stop ids.
  std::vector<int32_t> stop_ids(const Tokenizer& tokenizer) const;
  const std::string& source() const { return source_; }

 private:
  ChatTemplate() = default;
  std::string source_;
  ChatTemplateTokens tokens_;
  std::shared_ptr<minja::TemplateNode> root_;
};

}  // namespace kiln
