// Chat template detection and rendering (ChatML, SmolLM2's default system prompt, Llama-3).
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "models/chat_template.h"
#include "models/tokenizer.h"

namespace kiln {
namespace {

// SmolLM2-135M-Instruct's template, as its GGUF and tokenizer_config.json carry it.
constexpr const char* kSmolLm2Template =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

constexpr const char* kPlainChatMl =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' "
    "}}{% endif %}";

constexpr const char* kLlama3Template =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

TEST(ChatTemplateTest, ChatMlWithSystemMessage) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::detect(kPlainChatMl, false);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->kind(), ChatTemplateKind::kChatMl);
  EXPECT_EQ(t->default_system_prompt(), "");
  const std::vector<ChatMessage> msgs = {{"system", "Be brief."}, {"user", "Hi"}};
  EXPECT_EQ(t->render(msgs, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(t->render(msgs, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
  EXPECT_EQ(t->stop_tokens(), (std::vector<std::string>{"<|im_end|>"}));
}

TEST(ChatTemplateTest, ChatMlWithoutSystemMessage) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::detect(kPlainChatMl, false);
  ASSERT_TRUE(t.ok());
  const std::vector<ChatMessage> msgs = {{"user", "Hi"}, {"assistant", "Hello!"}, {"user", "2+2?"}};
  EXPECT_EQ(t->render(msgs, true),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, SmolLm2DefaultSystemPrompt) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::detect(kSmolLm2Template, true);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->default_system_prompt(),
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  EXPECT_EQ(t->render({{"user", "Hi"}}, true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  // A conversation with its own system message gets no default one.
  EXPECT_EQ(t->render({{"system", "S"}, {"user", "Hi"}}, false),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
  // The template's loop never runs for no messages, so nothing but the generation prompt.
  EXPECT_EQ(t->render({}, true), "<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, Llama3) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::detect(kLlama3Template, false);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->kind(), ChatTemplateKind::kLlama3);
  EXPECT_EQ(t->render({{"system", "Be brief. "}, {"user", " Hi"}}, true),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(t->render({{"user", "Hi"}}, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
  EXPECT_EQ(t->stop_tokens(), (std::vector<std::string>{"<|eot_id|>"}));
}

TEST(ChatTemplateTest, NoTemplateFallsBackToChatMlOnlyWithImStart) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::detect("", true);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->kind(), ChatTemplateKind::kChatMl);
  absl::StatusOr<ChatTemplate> none = ChatTemplate::detect("", false);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no chat template"), std::string::npos);
}

TEST(ChatTemplateTest, UnknownTemplateIsAnError) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::detect(
      "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}", true);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("unrecognized chat template"), std::string::npos);
  EXPECT_NE(t.status().message().find("[INST]"), std::string::npos);
}

TEST(ChatTemplateTest, StopIdsFromTokenizer) {
  TokenizerSpec spec;
  spec.vocab = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "a"};
  spec.types = {TokenType::kControl, TokenType::kControl, TokenType::kControl, TokenType::kNormal};
  spec.eos_id = 0;
  spec.chat_template = kSmolLm2Template;
  absl::StatusOr<Tokenizer> tok = Tokenizer::from_spec(spec);
  ASSERT_TRUE(tok.ok()) << tok.status();
  absl::StatusOr<ChatTemplate> t = ChatTemplate::for_tokenizer(*tok);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->stop_ids(*tok), (std::vector<int32_t>{2, 0}));
  // The rendered prompt tokenizes its markers as single special tokens.
  // (This toy vocabulary has no byte tokens, so only the markers and "a" survive.)
  std::vector<int32_t> specials;
  for (int32_t id : tok->encode(t->render({{"system", "a"}}, true))) {
    if (tok->is_special(id)) specials.push_back(id);
  }
  EXPECT_EQ(specials, (std::vector<int32_t>{1, 2, 1}));
}

}  // namespace
}  // namespace kiln
