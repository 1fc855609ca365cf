// EngineLoop: the engine thread — inbox, scheduler steps, sampling, text, metrics.
#include "server/engine_loop.h"

#include "absl/strings/str_cat.h"
#include "runtime/scheduler/step_execution.h"

namespace kiln {
namespace {

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

StreamEvent event(StreamEvent::Kind kind, std::string text = "", std::string finish = "") {
  StreamEvent ev;
  ev.kind = kind;
  ev.text = std::move(text);
  ev.finish_reason = std::move(finish);
  return ev;
}

StreamEvent error_event(absl::Status error) {
  StreamEvent ev;
  ev.kind = StreamEvent::Kind::kError;
  ev.error = std::move(error);
  return ev;
}

}  // namespace

std::optional<StreamEvent> RequestStream::next(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return std::nullopt;
  StreamEvent ev = std::move(events_.front());
  events_.pop_front();
  return ev;
}

void RequestStream::cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
}

bool RequestStream::cancelled() {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_;
}

void RequestStream::push(StreamEvent ev) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(ev));
  }
  cv_.notify_all();
}

EngineLoop::EngineLoop(const EngineOptions& options, KvPageTables& kv, Backend& backend,
                       const Tokenizer& tokenizer)
    : options_(options),
      kv_(kv),
      backend_(backend),
      tokenizer_(tokenizer),
      prefix_(options.prefix_cache ? std::make_unique<PrefixCache>(kv) : nullptr),
      scheduler_(options.scheduler, kv, prefix_.get()) {
  update_metrics();
  thread_ = std::thread([this] { run(); });
}

EngineLoop::~EngineLoop() {
  drain();
  if (thread_.joinable()) thread_.join();
  prefix_.reset();  // its holder sequences go before the cache they live in
}

absl::StatusOr<std::shared_ptr<RequestStream>> EngineLoop::submit(ServeRequest request) {
  auto stream = std::make_shared<RequestStream>();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_) return absl::UnavailableError("the server is shutting down");
    const int64_t depth = static_cast<int64_t>(inbox_.size()) + metrics_.waiting;
    if (depth >= options_.max_queue) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the request queue is full (", depth, " waiting); retry later"));
    }
    inbox_.push_back({std::move(request), stream, std::chrono::steady_clock::now()});
  }
  cv_.notify_all();
  return stream;
}

void EngineLoop::drain() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable() && std::this_thread::get_id() != thread_.get_id()) thread_.join();
}

bool EngineLoop::draining() const {
  std::lock_guard<std::mutex> lock(mu_);
  return draining_;
}

EngineMetrics EngineLoop::metrics() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineMetrics m = metrics_;
  m.queue_depth += static_cast<int64_t>(inbox_.size());
  m.histograms =
      ttft_.text("kiln_time_to_first_token_seconds", "Time from arrival to the first token.") +
      itl_.text("kiln_inter_token_latency_seconds", "Time between consecutive output tokens.");
  return m;
}

void EngineLoop::accept(Inbound in) {
  Live live;
  live.stream = in.stream;
  live.submitted = in.submitted;
  live.prompt_tokens = static_cast<int64_t>(in.request.prompt.size());
  absl::StatusOr<SamplingStream> sampler = SamplingStream::create(in.request.sampling);
  if (!sampler.ok()) {
    in.stream->push(error_event(sampler.status()));
    return;
  }
  SequenceRequest seq{std::move(in.request.prompt), in.request.max_tokens,
                      std::move(in.request.stop_ids)};
  absl::StatusOr<RequestId> id = scheduler_.add(std::move(seq));
  if (!id.ok()) {
    in.stream->push(error_event(id.status()));
    return;
  }
  live.sampling.emplace(std::move(*sampler));
  live.text.emplace(tokenizer_, std::move(in.request.stop), /*skip_special=*/true);
  in.stream->push(event(StreamEvent::Kind::kAccepted));
  live_.emplace(*id, std::move(live));
}

void EngineLoop::finish(RequestId id, Live& live, StreamEvent done) {
  done.prompt_tokens = live.prompt_tokens;
  done.completion_tokens = live.completion_tokens;
  live.stream->push(std::move(done));
  live_.erase(id);
}

void EngineLoop::handle(const RequestEvent& ev) {
  auto it = live_.find(ev.request);
  if (it == live_.end()) return;
  Live& live = it->second;
  const auto now = std::chrono::steady_clock::now();
  if (ev.token) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (live.completion_tokens == 0) {
        ttft_.observe(seconds(now - live.submitted));
      } else {
        itl_.observe(seconds(now - live.last_token));
      }
    }
    live.last_token = now;
    live.completion_tokens++;
    const bool stopped = live.text->push(*ev.token);
    std::string piece = live.text->take();
    // One event per token, its text possibly empty (held back for a stop string or a split
    // UTF-8 character, a special token): a stream then shows every token as it comes, which is
    // what clients time (TTFT, inter-token latency), as other OpenAI servers send them.
    live.stream->push(event(StreamEvent::Kind::kText, std::move(piece)));
    if (stopped && !ev.finished) {
      (void)scheduler_.stop(ev.request);  // a stop string: done, whatever max_tokens says
      std::lock_guard<std::mutex> lock(mu_);
      metrics_.requests_finished++;
      finish(ev.request, live, event(StreamEvent::Kind::kDone, "", "stop"));
      return;
    }
  }
  if (!ev.finished) return;
  if (ev.cause == FinishCause::kError) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      metrics_.requests_failed++;
    }
    finish(ev.request, live, error_event(ev.error));
    return;
  }
  live.text->finish();  // what was held back comes with kDone (kText stays one a token)
  const bool stop = ev.cause == FinishCause::kStopToken || live.text->stopped();
  {
    std::lock_guard<std::mutex> lock(mu_);
    metrics_.requests_finished++;
  }
  finish(ev.request, live,
         event(StreamEvent::Kind::kDone, live.text->take(), stop ? "stop" : "length"));
}

void EngineLoop::update_metrics() {
  // Holder sequences are the cache's; every other sequence belongs to a live request.
  const int64_t holders = prefix_ ? prefix_->num_nodes() : 0;
  std::lock_guard<std::mutex> lock(mu_);
  metrics_.running = scheduler_.num_running();
  metrics_.waiting = scheduler_.num_waiting();
  metrics_.queue_depth = metrics_.waiting;
  metrics_.kv_pages_total = kv_.pool().num_pages();
  metrics_.kv_pages_used = kv_.pool().used_pages();
  metrics_.kv_request_sequences = kv_.num_sequences() - holders;
  metrics_.kv_pages_cached = prefix_ ? prefix_->num_pages() : 0;
  if (prefix_) metrics_.prefix = prefix_->stats();
  metrics_.scheduler = scheduler_.stats();
}

void EngineLoop::run() {
  while (true) {
    std::deque<Inbound> arrivals;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (inbox_.empty() && scheduler_.idle()) {
        if (draining_) break;
        cv_.wait_for(lock, std::chrono::milliseconds(100));
      }
      arrivals.swap(inbox_);
    }
    for (Inbound& in : arrivals) accept(std::move(in));
    // Cancellations (client disconnects) between steps, when no step holds their pages.
    for (auto it = live_.begin(); it != live_.end();) {
      if (!it->second.stream->cancelled()) {
        ++it;
        continue;
      }
      (void)scheduler_.cancel(it->first);
      {
        std::lock_guard<std::mutex> lock(mu_);
        metrics_.requests_cancelled++;
      }
      it = live_.erase(it);
    }
    if (scheduler_.idle()) {
      update_metrics();
      continue;
    }
    absl::StatusOr<ScheduledStep> step = scheduler_.schedule();
    std::vector<RequestEvent> events;
    if (!step.ok()) {
      // The KV bookkeeping is inconsistent: fail everything rather than serve wrong tokens.
      for (auto& [id, live] : live_) (void)scheduler_.cancel(id);
      for (auto it = live_.begin(); it != live_.end();) {
        RequestEvent ev;
        ev.request = it->first;
        ev.finished = true;
        ev.cause = FinishCause::kError;
        ev.error = step.status();
        ++it;
        handle(ev);
      }
      continue;
    }
    if (step->empty()) {
      events = scheduler_.commit(*step, {});
    } else {
      std::vector<SamplingStream*> streams;
      streams.reserve(step->requests.size());
      for (RequestId id : step->requests) streams.push_back(&*live_.at(id).sampling);
      absl::StatusOr<std::vector<int32_t>> tokens =
          run_scheduled_step(backend_, *step, streams, options_.cascade);
      events =
          tokens.ok() ? scheduler_.commit(*step, *tokens) : scheduler_.fail(*step, tokens.status());
    }
    for (const RequestEvent& ev : events) handle(ev);
    update_metrics();
  }
  update_metrics();
}

}  // namespace kiln
