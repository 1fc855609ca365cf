// EngineLoop: the serving engine on its own thread — requests arrive through a thread-safe inbox,
// the scheduler batches them step after step on the backend, and each request's text streams
// back through its RequestStream. HTTP handlers only ever touch the inbox and their stream.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/tokenizer.h"
#include "runtime/backend.h"
#include "runtime/engine/sampling.h"
#include "runtime/engine/text_stream.h"
#include "runtime/kv/page_tables.h"
#include "runtime/kv/prefix_cache.h"
#include "runtime/scheduler/scheduler.h"
#include "server/histogram.h"

namespace kiln {

/// A request as the engine takes it: token ids and how to stop.
struct ServeRequest {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int64_t max_tokens = 16;
  std::vector<std::string> stop;  ///< stop strings (cut from the text)
  std::vector<int32_t> stop_ids;  ///< stop tokens (not emitted)
};

/// One message from the engine to a request's handler.
struct StreamEvent {
  /// kText: one for each generated token, its text possibly empty (held back for a stop string
  /// or a split character, a special token). kDone: the end, with the text held back till then.
  enum class Kind { kAccepted, kText, kDone, kError };
  Kind kind = Kind::kText;
  std::string text;
  /// kDone: "stop" (a stop token or string) or "length" (max_tokens or the context).
  std::string finish_reason;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  absl::Status error;  ///< kError: InvalidArgument (never fits), or the backend's failure
};

/// The handler's end of a request: a queue of events filled by the engine thread.
class RequestStream {
 public:
  /// Waits up to `timeout` for the next event; nullopt on timeout.
  std::optional<StreamEvent> next(std::chrono::milliseconds timeout);
  /// Asks the engine to drop the request (its pages are freed before the next step).
  void cancel();

 private:
  friend class EngineLoop;
  void push(StreamEvent ev);
  bool cancelled();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StreamEvent> events_;
  bool cancelled_ = false;
};

struct EngineOptions {
  SchedulerConfig scheduler;
  bool prefix_cache = true;
  /// Cascade attention for decode steps whose requests share prefix pages (`--cascade`).
  CascadeMode cascade = CascadeMode::kAuto;
  /// Requests waiting for admission (inbox + scheduler queue) before submit() answers
  /// ResourceExhausted (HTTP 429).
  int64_t max_queue = 256;
};

/// Point-in-time numbers for /metrics.
struct EngineMetrics {
  int64_t queue_depth = 0;  ///< inbox + waiting
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t kv_pages_total = 0;
  int64_t kv_pages_used = 0;
  int64_t kv_pages_cached = 0;       ///< distinct pages the prefix cache holds
  int64_t kv_request_sequences = 0;  ///< page tables of live requests (0 when idle: no leak)
  PrefixCacheStats prefix;
  SchedulerStats scheduler;
  int64_t requests_finished = 0;
  int64_t requests_cancelled = 0;
  int64_t requests_failed = 0;
  std::string histograms;  ///< TTFT and inter-token latency, Prometheus text
};

class EngineLoop {
 public:
  /// Starts the engine thread. `kv`, `backend` and `tokenizer` must outlive the loop; `kv` are
  /// the page tables of `backend`'s KV storage (page_tables_for).
  EngineLoop(const EngineOptions& options, KvPageTables& kv, Backend& backend,
             const Tokenizer& tokenizer);
  /// Drains (finishes every accepted request) and joins the thread.
  ~EngineLoop();

  /// Queues a request. ResourceExhausted when the queue is full, Unavailable while draining.
  /// Validation against the context and the KV pool happens on the engine thread: the stream's
  /// first event is kAccepted or kError.
  absl::StatusOr<std::shared_ptr<RequestStream>> submit(ServeRequest request);
  /// Stops taking requests, lets the accepted ones finish, then stops the thread.
  void drain();
  bool draining() const;
  EngineMetrics metrics() const;

 private:
  struct Live {
    std::shared_ptr<RequestStream> stream;
    std::optional<SamplingStream> sampling;
    std::optional<TextStream> text;
    int64_t prompt_tokens = 0;
    int64_t completion_tokens = 0;
    std::chrono::steady_clock::time_point submitted, last_token;
  };
  struct Inbound {
    ServeRequest request;
    std::shared_ptr<RequestStream> stream;
    std::chrono::steady_clock::time_point submitted;
  };
  void run();
  void accept(Inbound in);
  void handle(const RequestEvent& ev);
  void finish(RequestId id, Live& live, StreamEvent done);
  void update_metrics();
  void wake();

  EngineOptions options_;
  KvPageTables& kv_;
  Backend& backend_;
  const Tokenizer& tokenizer_;
  std::unique_ptr<PrefixCache> prefix_;
  Scheduler scheduler_;
  std::map<RequestId, Live> live_;  // engine thread only

  mutable std::mutex mu_;  // guards the fields below
  std::condition_variable cv_;
  std::deque<Inbound> inbox_;
  bool draining_ = false;
  bool stop_ = false;
  EngineMetrics metrics_;
  Histogram ttft_{Histogram::latency_bounds()};
  Histogram itl_{Histogram::latency_bounds()};

  std::thread thread_;
};

}  // namespace kiln
