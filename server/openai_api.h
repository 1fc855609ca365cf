// The OpenAI HTTP API's wire format: /v1/completions and /v1/chat/completions request parsing
// and validation (every rejection an ApiError with the OpenAI error shape), and the JSON of
// responses and SSE stream chunks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/chat_template.h"
#include "runtime/engine/sampling.h"

namespace kiln {

/// A rejected request: HTTP status plus OpenAI's `{"error": {message, type, param, code}}`.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  ///< the offending field, or empty
  std::string code;   ///< e.g. "model_not_found", or empty

  std::string body() const;
};

/// What a completions or chat request asks for, validated.
struct ApiRequest {
  bool chat = false;
  bool stream = false;
  bool include_usage = false;  ///< stream_options.include_usage: an extra usage-only chunk
  std::string model;
  std::string prompt;                 ///< completions: text prompt
  std::vector<int32_t> prompt_ids;    ///< completions: a prompt given as token ids
  std::vector<ChatMessage> messages;  ///< chat
  SamplingParams sampling;
  std::optional<int64_t> max_tokens;
  std::vector<std::string> stop;
  /// vLLM's extension: keep generating past EOS and stop tokens (benchmarks with fixed output
  /// lengths).
  bool ignore_eos = false;
};

/// JSON documents nested deeper than this are refused before parsing.
inline constexpr int kMaxJsonDepth = 32;

/// Parses and validates a request body. `served_model` is the name /v1/models lists (an unknown
/// name is 404 model_not_found, as OpenAI answers); a missing `model` means that one.
/// Returns nullopt and fills `error` on a bad request.
std::optional<ApiRequest> parse_api_request(const std::string& body, bool chat,
                                            const std::string& served_model, ApiError& error);

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  nlohmann::json json() const;
};

/// A whole (non-streaming) response.
nlohmann::json completion_response(const ApiRequest& r, const std::string& id, int64_t created,
                                   const std::string& text, const std::string& finish_reason,
                                   const Usage& usage);
/// One SSE chunk: `text` as a delta; `finish_reason` and `usage` in the last one.
nlohmann::json stream_chunk(const ApiRequest& r, const std::string& id, int64_t created,
                            const std::string& text, const std::string* finish_reason,
                            const Usage* usage, bool first);

}  // namespace kiln
