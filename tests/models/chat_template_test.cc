// Chat templates rendered by minja against transformers' apply_chat_template (goldens written at
// test time by scripts/make_tokenizer_fixtures.py), plus errors, limits and stop tokens.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "models/chat_template.h"
#include "models/tokenizer.h"
#include "nlohmann/json.hpp"

namespace kiln {
namespace {

using json = nlohmann::json;

json load_goldens() {
  const char* fx = std::getenv("KILN_FIXTURES");
  EXPECT_NE(fx, nullptr) << "KILN_FIXTURES not set (run through ctest)";
  std::ifstream in(std::filesystem::path(fx ? fx : "") / "tokenizers" / "chat_templates.json");
  std::ostringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

TEST(ChatTemplateTest, RendersAsTransformers) {
  const json g = load_goldens();
  ASSERT_TRUE(g.contains("cases"));
  std::cerr << "goldens rendered by " << g["renderer"].get<std::string>() << "\n";
  const ChatTemplateTokens tokens{g["bos_token"], g["eos_token"]};
  int checked = 0, errors = 0;
  for (const json& c : g["cases"]) {
    const std::string name = c["template"];
    absl::StatusOr<ChatTemplate> t =
        ChatTemplate::compile(g["templates"][name].get<std::string>(), tokens);
    ASSERT_TRUE(t.ok()) << name << ": " << t.status();
    std::vector<ChatMessage> messages;
    for (const json& m : g["conversations"][c["conversation"].get<int>()]) {
      messages.push_back({m["role"], m["content"]});
    }
    const bool agp = c["add_generation_prompt"];
    absl::StatusOr<std::string> out = t->render(messages, agp);
    const std::string where =
        name + " conversation " + c["conversation"].dump() + (agp ? " +generation prompt" : "");
    if (c["error"].is_null()) {
      ASSERT_TRUE(out.ok()) << where << ": " << out.status();
      EXPECT_EQ(*out, c["output"].get<std::string>()) << where;
    } else {
      // raise_exception: the template's own message comes back.
      ASSERT_FALSE(out.ok()) << where << " rendered " << *out;
      EXPECT_NE(out.status().message().find(c["error"].get<std::string>()), std::string::npos)
          << where << ": " << out.status();
      ++errors;
    }
    ++checked;
  }
  EXPECT_GE(checked, 70);
  EXPECT_GE(errors, 5);
}

void expect_error(std::string_view jinja, const std::string& fragment, bool at_render = false) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::compile(jinja, {"<s>", "</s>"});
  absl::Status s = t.status();
  if (t.ok()) {
    ASSERT_TRUE(at_render) << "compiled: " << jinja;
    s = t->render({{"user", "Hi"}}, true).status();
  }
  ASSERT_FALSE(s.ok()) << jinja;
  EXPECT_NE(s.message().find(fragment), std::string::npos) << s.message();
  EXPECT_LT(s.message().size(), 2000u);
}

TEST(ChatTemplateTest, UnrenderableTemplatesNameTheConstruct) {
  expect_error("{% include 'other.jinja' %}", "(at 'include')");
  expect_error("{% for m in messages %}{{ m.content }}", "Unterminated for");  // no endfor
  expect_error("{{ messages | no_such_filter }}",
               "uses the filter 'no_such_filter', which kiln's Jinja engine (minja) does not");
  expect_error("{{ messages[0].content.frobnicate() }}", "Unknown method: frobnicate",
               /*at_render=*/true);
  expect_error("{{ 'a' + }}", "chat template does not parse");
  // A '|' inside a string literal is not a filter.
  absl::StatusOr<ChatTemplate> t = ChatTemplate::compile("{{ '<|im_start|>' | trim }}", {});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t->render({}, false), "<|im_start|>");
}

TEST(ChatTemplateTest, HostileNestingIsRefusedBeforeParsing) {
  std::string deep(50000, '(');
  expect_error("{{ " + deep + " }}", "brackets nested more than 256");
  std::string blocks;
  for (int i = 0; i < 50000; ++i) blocks += "{% if true %}";
  expect_error(blocks, "blocks ({% if %}) nested more than 64");
  expect_error(std::string((1 << 20) + 1, 'x'), "over the 1048576-byte limit");
  // Just under the limits the parser copes (no stack overflow).
  absl::StatusOr<ChatTemplate> parens = ChatTemplate::compile(
      "{{ " + std::string(250, '(') + "1" + std::string(250, ')') + " }}", {});
  ASSERT_TRUE(parens.ok()) << parens.status();
  EXPECT_EQ(*parens->render({}, false), "1");
  // A realistic depth still works.
  std::string ok;
  for (int i = 0; i < 20; ++i) ok += "{% if true %}";
  ok += "x";
  for (int i = 0; i < 20; ++i) ok += "{% endif %}";
  absl::StatusOr<ChatTemplate> t = ChatTemplate::compile(ok, {});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t->render({}, false), "x");
}

Tokenizer toy_tokenizer(std::string chat_template) {
  TokenizerSpec spec;
  spec.vocab = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "<|eot_id|>"};
  spec.types = {TokenType::kControl, TokenType::kControl, TokenType::kControl, TokenType::kNormal,
                TokenType::kControl};
  spec.eos_id = 0;
  spec.bos_id = 1;
  spec.chat_template = std::move(chat_template);
  absl::StatusOr<Tokenizer> tok = Tokenizer::from_spec(spec);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return *std::move(tok);
}

TEST(ChatTemplateTest, TokenizerTemplateAndItsTokens) {
  // bos_token / eos_token come from the tokenizer.
  const Tokenizer tok = toy_tokenizer("{{ bos_token }}{{ messages[0]['content'] }}{{ eos_token }}");
  absl::StatusOr<ChatTemplate> t = ChatTemplate::for_tokenizer(tok);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t->render({{"user", "a"}}, false), "<|im_start|>a<|endoftext|>");
  EXPECT_TRUE(t->stop_tokens().empty());
  EXPECT_EQ(t->stop_ids(tok), (std::vector<int32_t>{0, 2, 4}));  // EOS and the vocab's stops
}

TEST(ChatTemplateTest, NoTemplateFallsBackToChatMlOnlyWithImStart) {
  const Tokenizer tok = toy_tokenizer("");
  absl::StatusOr<ChatTemplate> t = ChatTemplate::for_tokenizer(tok);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->source(), ChatTemplate::chatml_template());
  EXPECT_EQ(*t->render({{"user", "a"}}, true),
            "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t->stop_tokens(), (std::vector<std::string>{"<|im_end|>"}));
  EXPECT_EQ(t->stop_ids(tok), (std::vector<int32_t>{2, 0, 4}));
  // The rendered prompt tokenizes its markers as single special tokens.
  std::vector<int32_t> specials;
  for (int32_t id : tok.encode(*t->render({{"system", "a"}}, true))) {
    if (tok.is_special(id)) specials.push_back(id);
  }
  EXPECT_EQ(specials, (std::vector<int32_t>{1, 2, 1}));

  TokenizerSpec spec;
  spec.vocab = {"a"};
  absl::StatusOr<Tokenizer> plain = Tokenizer::from_spec(spec);
  ASSERT_TRUE(plain.ok());
  absl::StatusOr<ChatTemplate> none = ChatTemplate::for_tokenizer(*plain);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no chat template"), std::string::npos);
}

TEST(ChatTemplateTest, EndlessRecursionIsAnErrorNotACrash) {
  // On the main thread and on a thread with the default stack (as the server's workers).
  for (const char* jinja : {"{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
                            "{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}"}) {
    absl::StatusOr<ChatTemplate> t = ChatTemplate::compile(jinja, {});
    ASSERT_TRUE(t.ok()) << t.status();
    for (int pass = 0; pass < 2; ++pass) {
      absl::Status s;
      auto run = [&] { s = t->render({{"user", "Hi"}}, false).status(); };
      if (pass == 0) {
        run();
      } else {
        std::thread(run).join();
      }
      ASSERT_FALSE(s.ok()) << jinja;
      EXPECT_NE(s.message().find("recursion deeper than 400"), std::string::npos) << s.message();
    }
  }
  // Bounded recursion (as templates that render nested JSON schemas use) still works.
  absl::StatusOr<ChatTemplate> t = ChatTemplate::compile(
      "{% macro f(n) %}{% if n > 0 %}({{ f(n - 1) }}){% endif %}{% endmacro %}{{ f(30) }}", {});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t->render({}, false), std::string(30, '(') + std::string(30, ')'));
}

TEST(ChatTemplateTest, StrftimeNowIsDefined) {
  // Llama-3.1's template dates its system prompt with strftime_now.
  absl::StatusOr<ChatTemplate> t = ChatTemplate::compile("{{ strftime_now('%Y') | length }}", {});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t->render({}, false), "4");
}

}  // namespace
}  // namespace kiln
