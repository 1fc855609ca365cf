// The OpenAI wire format: valid requests parse into settings, every invalid one is an ApiError
// naming the field (404 for an unknown model), and responses/chunks have OpenAI's shape.
#include "server/openai_api.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kiln {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

std::optional<ApiRequest> parse(const std::string& body, bool chat, ApiError* error = nullptr) {
  ApiError e;
  std::optional<ApiRequest> r = parse_api_request(body, chat, "smol", e);
  if (error) *error = e;
  return r;
}

ApiError error_of(const std::string& body, bool chat = false) {
  ApiError e;
  EXPECT_FALSE(parse(body, chat, &e).has_value()) << body;
  return e;
}

TEST(OpenAiApi, ParsesCompletionSettings) {
  auto r = parse(R"({"model": "smol", "prompt": "hi", "max_tokens": 7, "temperature": 0.5,
                     "top_p": 0.9, "top_k": 40, "seed": 3, "stop": ["\n", "."], "stream": true,
                     "stream_options": {"include_usage": true}})",
                 false);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->prompt, "hi");
  EXPECT_EQ(r->max_tokens, 7);
  EXPECT_FLOAT_EQ(r->sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r->sampling.top_p, 0.9f);
  EXPECT_EQ(r->sampling.top_k, 40);
  EXPECT_EQ(r->sampling.seed, 3u);
  EXPECT_EQ(r->stop, (std::vector<std::string>{"\n", "."}));
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  auto ids = parse(R"({"prompt": [1, 2, 3]})", false);
  ASSERT_TRUE(ids.has_value());
  EXPECT_EQ(ids->prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_FALSE(ids->max_tokens.has_value());
}

TEST(OpenAiApi, ParsesChatMessagesWithTextParts) {
  auto r = parse(R"({"messages": [{"role": "system", "content": "be brief"},
                                  {"role": "user", "content": [{"type": "text", "text": "a"},
                                                               {"type": "text", "text": "b"}]}]})",
                 true);
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->messages.size(), 2u);
  EXPECT_EQ(r->messages[1].role, "user");
  EXPECT_EQ(r->messages[1].content, "ab");
}

TEST(OpenAiApi, RejectsBadRequestsNamingTheField) {
  EXPECT_THAT(error_of("{\"prompt\": ").message, HasSubstr("not valid JSON"));
  EXPECT_THAT(error_of("{\"prompt\": \"\xff\"}").message, HasSubstr("UTF-8"));
  EXPECT_THAT(error_of("[1]").message, HasSubstr("JSON object"));
  EXPECT_THAT(error_of(std::string(40, '[') + std::string(40, ']')).message,
              HasSubstr("nests deeper"));
  EXPECT_EQ(error_of(R"({"prompt": "x", "max_tokens": "3"})").param, "max_tokens");
  EXPECT_EQ(error_of(R"({"prompt": "x", "max_tokens": -1})").param, "max_tokens");
  EXPECT_EQ(error_of(R"({"prompt": "x", "max_tokens": 0})").param, "max_tokens");
  EXPECT_EQ(error_of(R"({"prompt": "x", "temperature": 3})").param, "temperature");
  EXPECT_EQ(error_of(R"({"prompt": "x", "top_p": 0})").param, "top_p");
  EXPECT_EQ(error_of(R"({"prompt": "x", "top_k": 1.5})").param, "top_k");
  EXPECT_EQ(error_of(R"({"prompt": "x", "n": 2})").param, "n");
  EXPECT_EQ(error_of(R"({"prompt": "x", "stop": 3})").param, "stop");
  EXPECT_EQ(error_of(R"({"prompt": "x", "stream": 1})").param, "stream");
  EXPECT_EQ(error_of(R"({"prompt": 4})").param, "prompt");
  EXPECT_EQ(error_of(R"({"max_tokens": 4})").param, "prompt");
  EXPECT_EQ(error_of(R"({"messages": []})", true).param, "messages");
  EXPECT_EQ(error_of(R"({"messages": [{"role": "robot", "content": "x"}]})", true).param,
            "messages[0].role");
  ApiError model = error_of(R"({"model": "gpt-4", "prompt": "x"})");
  EXPECT_EQ(model.status, 404);
  EXPECT_EQ(model.code, "model_not_found");
  json body = json::parse(model.body());
  EXPECT_EQ(body["error"]["param"], "model");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
}

TEST(OpenAiApi, ResponsesAndChunksHaveOpenAisShape) {
  ApiRequest chat;
  chat.chat = true;
  chat.model = "smol";
  json whole = completion_response(chat, "chatcmpl-1", 5, "hey", "stop", Usage{3, 1});
  EXPECT_EQ(whole["object"], "chat.completion");
  EXPECT_EQ(whole["choices"][0]["message"]["content"], "hey");
  EXPECT_EQ(whole["usage"]["total_tokens"], 4);
  json first = stream_chunk(chat, "chatcmpl-1", 5, "", nullptr, nullptr, true);
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  const std::string finish = "length";
  Usage u{3, 2};
  json last = stream_chunk(chat, "chatcmpl-1", 5, "", &finish, &u, false);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(last["usage"]["completion_tokens"], 2);
  ApiRequest text;
  text.model = "smol";
  json piece = stream_chunk(text, "cmpl-1", 5, "ab", nullptr, nullptr, false);
  EXPECT_EQ(piece["object"], "text_completion");
  EXPECT_EQ(piece["choices"][0]["text"], "ab");
  EXPECT_TRUE(piece["choices"][0]["finish_reason"].is_null());
}

}  // namespace
}  // namespace kiln
