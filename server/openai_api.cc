// The OpenAI wire format: request validation and response JSON (see openai_api.h).
#include "server/openai_api.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace kiln {
namespace {

using nlohmann::json;

// Deepest nesting of arrays/objects outside strings. A linear scan before parsing, so a body of
// a million '[' is refused instead of building (and recursively destroying) that deep a tree.
int json_depth(const std::string& s) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

ApiError bad(std::string param, std::string message) {
  ApiError e;
  e.param = std::move(param);
  e.message = std::move(message);
  return e;
}

}  // namespace

std::string ApiError::body() const {
  json e = {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}};
  return json{{"error", e}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<ApiRequest> parse_api_request(const std::string& body, bool chat,
                                            const std::string& served_model, ApiError& error) {
  if (json_depth(body) > kMaxJsonDepth) {
    error = bad("", absl::StrCat("the JSON body nests deeper than ", kMaxJsonDepth, " levels"));
    return std::nullopt;
  }
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Re-parse with exceptions only for the message (position, and invalid UTF-8 named).
    std::string why = "not valid JSON";
    try {
      json unused = json::parse(body);
      (void)unused;
    } catch (const json::parse_error& e) {
      why = e.what();
    }
    error = bad("", absl::StrCat("the request body is not valid JSON: ", why));
    return std::nullopt;
  }
  if (!j.is_object()) {
    error = bad("", "the request body must be a JSON object");
    return std::nullopt;
  }
  ApiRequest r;
  r.chat = chat;
  r.model = served_model;
  auto field = [&](const char* name) -> const json* {
    auto it = j.find(name);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  };
  auto fail = [&](const std::string& param, const std::string& message) {
    error = bad(param, message);
    return std::nullopt;
  };

  if (const json* m = field("model")) {
    if (!m->is_string()) return fail("model", "`model` must be a string");
    if (m->get<std::string>() != served_model) {
      error =
          bad("model", absl::StrCat("The model `", m->get<std::string>(),
                                    "` does not exist; this server serves `", served_model, "`"));
      error.status = 404;
      error.code = "model_not_found";
      return std::nullopt;
    }
  }
  if (chat) {
    const json* msgs = field("messages");
    if (msgs == nullptr) return fail("messages", "`messages` is required");
    if (!msgs->is_array() || msgs->empty()) {
      return fail("messages", "`messages` must be a non-empty array");
    }
    for (size_t i = 0; i < msgs->size(); ++i) {
      const json& m = (*msgs)[i];
      const std::string p = absl::StrCat("messages[", i, "]");
      if (!m.is_object()) return fail(p, p + " must be an object");
      auto role = m.find("role");
      if (role == m.end() || !role->is_string()) return fail(p + ".role", "role must be a string");
      const std::string rs = role->get<std::string>();
      if (rs != "system" && rs != "user" && rs != "assistant" && rs != "developer") {
        return fail(p + ".role",
                    absl::StrCat("unsupported role `", rs, "`: use system, user or assistant"));
      }
      ChatMessage cm{rs == "developer" ? "system" : rs, ""};
      auto content = m.find("content");
      if (content == m.end() || content->is_null()) {
        cm.content = "";
      } else if (content->is_string()) {
        cm.content = content->get<std::string>();
      } else if (content->is_array()) {
        for (const json& part : *content) {  // [{"type": "text", "text": "..."}]
          if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
              !part["text"].is_string()) {
            return fail(p + ".content",
                        "content parts must be {\"type\": \"text\", \"text\": ...}");
          }
          cm.content += part["text"].get<std::string>();
        }
      } else {
        return fail(p + ".content", "content must be a string or an array of text parts");
      }
      r.messages.push_back(std::move(cm));
    }
  } else {
    const json* p = field("prompt");
    if (p == nullptr) return fail("prompt", "`prompt` is required");
    if (p->is_string()) {
      r.prompt = p->get<std::string>();
    } else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) {
      r.prompt = (*p)[0].get<std::string>();
    } else if (p->is_array() && !p->empty() && (*p)[0].is_number_integer()) {
      for (const json& t : *p) {
        if (!t.is_number_integer()) return fail("prompt", "a token-id prompt holds integers only");
        const int64_t v = t.get<int64_t>();
        if (v < 0 || v > INT32_MAX)
          return fail("prompt", absl::StrCat("token id ", v, " is out of range"));
        r.prompt_ids.push_back(static_cast<int32_t>(v));
      }
    } else {
      return fail("prompt",
                  "`prompt` must be a string, a one-string array or token ids (n=1 only: one "
                  "prompt per request)");
    }
  }

  if (const json* s = field("stream")) {
    if (!s->is_boolean()) return fail("stream", "`stream` must be a boolean");
    r.stream = s->get<bool>();
  }
  if (const json* ie = field("ignore_eos")) {
    if (!ie->is_boolean()) return fail("ignore_eos", "`ignore_eos` must be a boolean");
    r.ignore_eos = ie->get<bool>();
  }
  if (const json* so = field("stream_options")) {
    if (!so->is_object()) return fail("stream_options", "`stream_options` must be an object");
    auto iu = so->find("include_usage");
    if (iu != so->end() && !iu->is_null()) {
      if (!iu->is_boolean()) return fail("stream_options.include_usage", "must be a boolean");
      r.include_usage = iu->get<bool>();
    }
  }
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    if (const json* m = field(name)) {
      if (!m->is_number_integer())
        return fail(name, absl::StrCat("`", name, "` must be an integer"));
      if (!m->is_number_unsigned() || m->get<int64_t>() < 1) {
        return fail(name, absl::StrCat("`", name, "` must be at least 1"));
      }
      r.max_tokens =
          m->get<uint64_t>() > uint64_t{INT64_MAX / 2} ? INT64_MAX / 2 : m->get<int64_t>();
    }
  }
  if (const json* n = field("n")) {
    if (!n->is_number_integer() || n->get<int64_t>() != 1) {
      return fail("n", "only n = 1 is supported");
    }
  }
  if (const json* t = field("temperature")) {
    if (!t->is_number()) return fail("temperature", "`temperature` must be a number");
    const double v = t->get<double>();
    if (!std::isfinite(v) || v < 0 || v > 2)
      return fail("temperature", "`temperature` must be in [0, 2]");
    r.sampling.temperature = static_cast<float>(v);
  }
  if (const json* t = field("top_p")) {
    if (!t->is_number()) return fail("top_p", "`top_p` must be a number");
    const double v = t->get<double>();
    if (!(v > 0 && v <= 1)) return fail("top_p", "`top_p` must be in (0, 1]");
    r.sampling.top_p = static_cast<float>(v);
  }
  if (const json* t = field("top_k")) {
    if (!t->is_number_integer()) return fail("top_k", "`top_k` must be an integer");
    const int64_t v = t->get<int64_t>();
    if (v < -1 || v > INT32_MAX) return fail("top_k", "`top_k` must be -1 or 0 (off) or positive");
    r.sampling.top_k = v <= 0 ? 0 : static_cast<int32_t>(v);
  }
  if (const json* t = field("seed")) {
    if (!t->is_number_integer()) return fail("seed", "`seed` must be an integer");
    r.sampling.seed =
        t->is_number_unsigned() ? t->get<uint64_t>() : static_cast<uint64_t>(t->get<int64_t>());
  }
  if (const json* s = field("stop")) {
    if (s->is_string()) {
      r.stop.push_back(s->get<std::string>());
    } else if (s->is_array()) {
      if (s->size() > 16) return fail("stop", "at most 16 stop strings");
      for (const json& x : *s) {
        if (!x.is_string()) return fail("stop", "`stop` must be a string or an array of strings");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      return fail("stop", "`stop` must be a string or an array of strings");
    }
  }
  return r;
}

nlohmann::json Usage::json() const {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

nlohmann::json completion_response(const ApiRequest& r, const std::string& id, int64_t created,
                                   const std::string& text, const std::string& finish_reason,
                                   const Usage& usage) {
  json choice = {{"index", 0}, {"finish_reason", finish_reason}, {"logprobs", nullptr}};
  if (r.chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
  }
  return {{"id", id},
          {"object", r.chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", r.model},
          {"choices", json::array({choice})},
          {"usage", usage.json()}};
}

nlohmann::json stream_chunk(const ApiRequest& r, const std::string& id, int64_t created,
                            const std::string& text, const std::string* finish_reason,
                            const Usage* usage, bool first) {
  json choice = {{"index", 0},
                 {"finish_reason", finish_reason ? json(*finish_reason) : json(nullptr)},
                 {"logprobs", nullptr}};
  if (r.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  json chunk = {{"id", id},
                {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", r.model},
                {"choices", json::array({choice})}};
  if (usage) chunk["usage"] = usage->json();
  return chunk;
}

}  // namespace kiln
