// HttpServer: routes of the OpenAI-compatible API over the engine loop (see http_server.h).
#include "server/http_server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/client_connection.h"
#include "server/openai_api.h"

namespace kiln {
namespace {

using nlohmann::json;

constexpr const char* kJson = "application/json";

std::string wire(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(e.body(), kJson);
}

ApiError api_error(int status, std::string message, std::string type = "invalid_request_error",
                   std::string param = "") {
  ApiError e;
  e.status = status;
  e.message = std::move(message);
  e.type = std::move(type);
  e.param = std::move(param);
  return e;
}

// The engine's verdict on a request or its failure, as an HTTP error.
ApiError engine_error(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument: return api_error(400, std::string(s.message()));
    case absl::StatusCode::kResourceExhausted:
      return api_error(429, std::string(s.message()), "rate_limit_exceeded");
    case absl::StatusCode::kUnavailable:
      return api_error(503, std::string(s.message()), "service_unavailable");
    default: return api_error(500, std::string(s.message()), "internal_error");
  }
}

std::string status_message(int status) {
  switch (status) {
    case 400: return "the request could not be read (malformed HTTP)";
    case 404: return "no such route: see /v1/models, /v1/completions, /v1/chat/completions";
    case 405: return "method not allowed on this route";
    case 408: return "the request was not received in time";
    case 413: return "the request body is too large";
    case 414: return "the request URI is too long";
    default: return absl::StrCat("HTTP error ", status);
  }
}

std::atomic<int64_t> next_request_id{0};

// Whether a handler's client went away, asked at most every 50 ms: a peek is a system call and
// tokens can arrive far more often. Without a socket to watch (none matched) it never says gone.
class ClientWatch {
 public:
  explicit ClientWatch(const httplib::Request& req)
      : conn_(ClientConnection::find(req.remote_addr, req.remote_port, req.local_addr,
                                     req.local_port)) {}
  bool gone() {
    if (!conn_) return false;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(50)) return false;
    last_ = now;
    return conn_->closed();
  }

 private:
  std::optional<ClientConnection> conn_;
  std::chrono::steady_clock::time_point last_{};
};

// The answer to a client that has gone: nobody reads it (499 as nginx logs such a request).
void client_gone(httplib::Response& res) {
  send_error(res, api_error(499, "the client closed the connection; the request was cancelled",
                            "client_closed_request"));
}

}  // namespace

HttpServer::HttpServer(const HttpServerOptions& options, EngineLoop& engine,
                       const Tokenizer& tokenizer, std::optional<ChatTemplate> chat,
                       std::vector<int32_t> stop_ids)
    : options_(options),
      engine_(engine),
      tokenizer_(tokenizer),
      chat_(std::move(chat)),
      stop_ids_(std::move(stop_ids)),
      http_(std::make_unique<httplib::Server>()) {
  const int threads = options_.threads;
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http_->set_payload_max_length(options_.max_body_bytes);
  http_->set_read_timeout(options_.read_timeout_seconds, 0);
  http_->set_write_timeout(10, 0);
  http_->set_keep_alive_timeout(5);
  routes();
}

HttpServer::~HttpServer() = default;

bool HttpServer::bind(std::string& error) {
  if (options_.port == 0) {
    port_ = http_->bind_to_any_port(options_.host);
    if (port_ > 0) return true;
  } else if (http_->bind_to_port(options_.host, options_.port)) {
    port_ = options_.port;
    return true;
  }
  error = absl::StrCat("cannot listen on ", options_.host, ":", options_.port,
                       " (address in use or not an address of this machine)");
  return false;
}

void HttpServer::serve() { http_->listen_after_bind(); }

void HttpServer::stop() { http_->stop(); }

void HttpServer::routes() {
  http_->set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        ApiError e = api_error(res.status, status_message(res.status));
        if (res.status == 404) e.type = "not_found_error";
        res.set_content(e.body(), kJson);
        return httplib::Server::HandlerResponse::Handled;
      }));
  http_->set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        send_error(res, api_error(500, "internal error: " + what, "internal_error"));
      });

  http_->Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (engine_.draining()) {
      res.status = 503;
      res.set_content(R"({"status":"draining"})", kJson);
      return;
    }
    res.set_content(R"({"status":"ok"})", kJson);
  });

  http_->Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    json model = {{"id", options_.model_name},
                  {"object", "model"},
                  {"created", 0},
                  {"owned_by", "kiln"},
                  {"max_model_len", options_.max_context}};
    res.set_content(wire({{"object", "list"}, {"data", json::array({model})}}), kJson);
  });

  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    const EngineMetrics m = engine_.metrics();
    std::string out;
    auto gauge = [&](const char* name, const char* help, double v, const char* type = "gauge") {
      absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name,
                      " ", absl::StrFormat("%.10g", v), "\n");
    };
    gauge("kiln_queue_depth", "Requests waiting for admission (inbox and scheduler queue).",
          m.queue_depth);
    gauge("kiln_num_requests_running", "Requests with KV pages in the running batch.", m.running);
    gauge("kiln_num_requests_waiting", "Requests waiting in the scheduler.", m.waiting);
    gauge("kiln_kv_pages_total", "KV cache pages in the pool.", m.kv_pages_total);
    gauge("kiln_kv_pages_used", "KV cache pages in use (requests and prefix cache).",
          m.kv_pages_used);
    gauge("kiln_kv_pages_free", "KV cache pages free.", m.kv_pages_total - m.kv_pages_used);
    gauge("kiln_kv_pages_prefix_cached", "KV pages the prefix cache references.",
          m.kv_pages_cached);
    gauge("kiln_kv_request_sequences", "Page tables of live requests (0 when idle).",
          m.kv_request_sequences);
    gauge("kiln_prefix_cache_hit_rate", "Prompt tokens served from the prefix cache / asked.",
          m.prefix.hit_rate());
    gauge("kiln_prefix_cache_hit_tokens_total", "Prompt tokens served from the prefix cache.",
          m.prefix.hit_tokens, "counter");
    gauge("kiln_prefix_cache_queried_tokens_total", "Prompt tokens looked up in the prefix cache.",
          m.prefix.lookup_tokens, "counter");
    gauge("kiln_prompt_tokens_total", "Prompt tokens of admitted requests.",
          m.scheduler.prompt_tokens, "counter");
    gauge("kiln_generation_tokens_total", "Output tokens generated.", m.scheduler.generated_tokens,
          "counter");
    gauge("kiln_computed_tokens_total", "Tokens run through the model (recompute included).",
          m.scheduler.computed_tokens, "counter");
    gauge("kiln_steps_total", "Engine steps run.", m.scheduler.steps, "counter");
    gauge("kiln_preemptions_total", "Requests preempted (pages freed, recomputed later).",
          m.scheduler.preemptions, "counter");
    gauge("kiln_requests_finished_total", "Requests that finished.", m.requests_finished,
          "counter");
    gauge("kiln_requests_cancelled_total", "Requests cancelled by a client disconnect.",
          m.requests_cancelled, "counter");
    gauge("kiln_requests_failed_total", "Requests that ended with an error.", m.requests_failed,
          "counter");
    out += m.histograms;
    res.set_content(out, "text/plain; version=0.0.4");
  });

  auto generate = [this](bool chat) {
    return [this, chat](const httplib::Request& req, httplib::Response& res) {
      if (engine_.draining()) {
        send_error(res, api_error(503, "the server is shutting down", "service_unavailable"));
        return;
      }
      ApiError err;
      std::optional<ApiRequest> r = parse_api_request(req.body, chat, options_.model_name, err);
      if (!r) return send_error(res, err);
      ServeRequest sr;
      sr.stop_ids = stop_ids_;
      if (chat) {
        if (!chat_) {
          return send_error(res, api_error(400,
                                           "this model has no chat template; use "
                                           "/v1/completions"));
        }
        // The model's own template (a user's messages can make it raise_exception: a 400).
        absl::StatusOr<std::string> text =
            chat_->render(r->messages, /*add_generation_prompt=*/true);
        if (!text.ok()) {
          return send_error(res,
                            api_error(400, absl::StrCat("chat template: ", text.status().message()),
                                      "invalid_request_error", "messages"));
        }
        // A chat template writes its own BOS (as apply_chat_template's text is encoded).
        sr.prompt = tokenizer_.encode(*text, /*parse_special=*/true, /*add_bos=*/false);
        for (int32_t id : chat_->stop_ids(tokenizer_)) sr.stop_ids.push_back(id);
      } else if (!r->prompt_ids.empty()) {
        for (int32_t id : r->prompt_ids) {
          if (id >= tokenizer_.vocab_size()) {
            return send_error(
                res, api_error(400,
                               absl::StrCat("token id ", id, " is outside the vocabulary (",
                                            tokenizer_.vocab_size(), ")"),
                               "invalid_request_error", "prompt"));
          }
        }
        sr.prompt = r->prompt_ids;
      } else {
        sr.prompt = tokenizer_.encode(r->prompt, /*parse_special=*/true, tokenizer_.add_bos());
      }
      const int64_t prompt_len = static_cast<int64_t>(sr.prompt.size());
      const char* prompt_param = chat ? "messages" : "prompt";
      if (prompt_len == 0) {
        return send_error(
            res, api_error(400, "the prompt is empty", "invalid_request_error", prompt_param));
      }
      if (prompt_len >= options_.max_context) {
        return send_error(res,
                          api_error(400,
                                    absl::StrCat("This model's maximum context length is ",
                                                 options_.max_context, " tokens; the prompt has ",
                                                 prompt_len, " tokens. Shorten the prompt."),
                                    "invalid_request_error", prompt_param));
      }
      sr.max_tokens = r->max_tokens.value_or(chat ? options_.max_context - prompt_len : 16);
      if (prompt_len + sr.max_tokens > options_.max_context) {
        return send_error(
            res,
            api_error(400,
                      absl::StrCat("This model's maximum context length is ", options_.max_context,
                                   " tokens. However, you requested ", prompt_len + sr.max_tokens,
                                   " tokens (", prompt_len, " in the prompt, ", sr.max_tokens,
                                   " for the completion). Reduce the prompt or max_tokens."),
                      "invalid_request_error", "max_tokens"));
      }
      sr.sampling = r->sampling;
      sr.stop = r->stop;
      if (r->ignore_eos) sr.stop_ids.clear();
      absl::StatusOr<std::shared_ptr<RequestStream>> stream = engine_.submit(std::move(sr));
      if (!stream.ok()) return send_error(res, engine_error(stream.status()));
      std::shared_ptr<RequestStream> s = *stream;
      // A client that disconnects cancels its request, whether it streams or not, so that its
      // pages go back to the pool at once instead of when max_tokens runs out.
      ClientWatch watch(req);
      // The engine validates against the KV pool; wait for its verdict before the status line.
      std::optional<StreamEvent> first;
      while (!(first = s->next(std::chrono::milliseconds(50)))) {
        if (watch.gone()) {
          s->cancel();
          return client_gone(res);
        }
      }
      if (first->kind == StreamEvent::Kind::kError) {
        return send_error(res, engine_error(first->error));
      }
      const std::string id = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", next_request_id++);
      const int64_t created = static_cast<int64_t>(std::time(nullptr));

      if (!r->stream) {
        std::string text;
        while (true) {
          std::optional<StreamEvent> ev = s->next(std::chrono::milliseconds(50));
          if (watch.gone()) {  // nothing is written before the end: no write can fail instead
            s->cancel();
            return client_gone(res);
          }
          if (!ev) continue;
          if (ev->kind == StreamEvent::Kind::kText) {
            text += ev->text;
          } else if (ev->kind == StreamEvent::Kind::kDone) {
            text += ev->text;
            Usage u{ev->prompt_tokens, ev->completion_tokens};
            res.set_content(wire(completion_response(*r, id, created, text, ev->finish_reason, u)),
                            kJson);
            return;
          } else if (ev->kind == StreamEvent::Kind::kError) {
            return send_error(res, engine_error(ev->error));
          }
        }
      }

      res.set_header("Cache-Control", "no-cache");
      ApiRequest api = *r;
      res.set_chunked_content_provider(
          "text/event-stream",
          [s, api, id, created, watch](size_t, httplib::DataSink& sink) mutable {
            auto send = [&](const std::string& data) {
              const std::string frame = "data: " + data + "\n\n";
              return sink.write(frame.data(), frame.size());
            };
            bool first_chunk = true;
            if (api.chat) {  // the role comes first, as OpenAI sends it
              if (!send(wire(stream_chunk(api, id, created, "", nullptr, nullptr, true)))) {
                s->cancel();
                return false;
              }
              first_chunk = false;
            }
            while (true) {
              std::optional<StreamEvent> ev = s->next(std::chrono::milliseconds(100));
              if (!ev) {
                // The client went away (a queued request writes nothing that could fail).
                if (!sink.is_writable() || watch.gone()) {
                  s->cancel();
                  return false;
                }
                continue;
              }
              bool ok = true;
              if (ev->kind == StreamEvent::Kind::kText) {
                ok = send(
                    wire(stream_chunk(api, id, created, ev->text, nullptr, nullptr, first_chunk)));
                first_chunk = false;
              } else if (ev->kind == StreamEvent::Kind::kDone) {
                Usage u{ev->prompt_tokens, ev->completion_tokens};
                ok = send(wire(stream_chunk(api, id, created, ev->text, &ev->finish_reason, &u,
                                            first_chunk)));
                if (ok && api.include_usage) {
                  json usage_only = {
                      {"id", id},
                      {"object", api.chat ? "chat.completion.chunk" : "text_completion"},
                      {"created", created},
                      {"model", api.model},
                      {"choices", json::array()},
                      {"usage", u.json()}};
                  ok = send(wire(usage_only));
                }
                if (ok) ok = send("[DONE]");
                if (ok) sink.done();
                return ok;
              } else if (ev->kind == StreamEvent::Kind::kError) {
                ok = send(engine_error(ev->error).body()) && send("[DONE]");
                if (ok) sink.done();
                return ok;
              }
              if (!ok) {
                s->cancel();
                return false;
              }
            }
          },
          [s](bool) { s->cancel(); });  // harmless once finished; frees pages otherwise
    };
  };
  http_->Post("/v1/completions", generate(false));
  http_->Post("/v1/chat/completions", generate(true));
}

}  // namespace kiln
