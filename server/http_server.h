// HttpServer: the OpenAI-compatible HTTP front end (cpp-httplib) — /v1/completions,
// /v1/chat/completions (SSE streaming or whole), /v1/models, /health, /metrics — over an
// EngineLoop. Handlers run on httplib's worker threads and reach the engine only through
// EngineLoop::submit and their RequestStream.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/chat_template.h"
#include "models/tokenizer.h"
#include "server/engine_loop.h"

namespace httplib {
class Server;
}

namespace kiln {

struct HttpServerOptions {
  std::string host = "127.0.0.1";  ///< loopback unless asked otherwise
  int port = 8000;                 ///< 0 = any free port (see HttpServer::port)
  std::string model_name;          ///< what /v1/models lists and requests must name
  int64_t max_context = 2048;      ///< prompt + max_tokens must fit
  size_t max_body_bytes = 1 << 20;
  int read_timeout_seconds = 10;  ///< a client that sends its request slower is dropped
  int threads = 64;               ///< concurrent connections handled
};

class HttpServer {
 public:
  /// `engine` and `tokenizer` must outlive the server. `chat` is the model's chat format
  /// (nullopt: /v1/chat/completions answers 400). `stop_ids` end every request.
  HttpServer(const HttpServerOptions& options, EngineLoop& engine, const Tokenizer& tokenizer,
             std::optional<ChatTemplate> chat, std::vector<int32_t> stop_ids);
  ~HttpServer();

  /// Binds the socket; false (with `error`) when the address is taken or invalid.
  bool bind(std::string& error);
  /// The bound port (after bind()).
  int port() const { return port_; }
  /// Serves until stop(); blocks.
  void serve();
  /// Stops listening and waits for the handlers to return.
  void stop();

 private:
  void routes();

  HttpServerOptions options_;
  EngineLoop& engine_;
  const Tokenizer& tokenizer_;
  std::optional<ChatTemplate> chat_;
  std::vector<int32_t> stop_ids_;
  std::unique_ptr<httplib::Server> http_;
  int port_ = 0;
};

}  // namespace kiln
