// Scheduler: continuous batching with chunked prefill, FCFS admission and preemption by
// recomputation (see scheduler.h).
#include "runtime/scheduler/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kiln {

const char* finish_cause_name(FinishCause cause) {
  switch (cause) {
    case FinishCause::kStopToken: return "stop token";
    case FinishCause::kMaxTokens: return "max tokens";
    case FinishCause::kContextFull: return "context full";
    case FinishCause::kStopped: return "stopped";
    case FinishCause::kCancelled: return "cancelled";
    case FinishCause::kError: return "error";
  }
  return "?";
}

Scheduler::Scheduler(const SchedulerConfig& config, KvPageTables& kv, PrefixCache* prefix)
    : config_(config), kv_(kv), prefix_(prefix) {
  config_.max_running = std::max(config_.max_running, 1);
  config_.max_step_tokens = std::max(config_.max_step_tokens, 1);
}

int64_t Scheduler::pages_for(int64_t tokens) const {
  return (tokens + kv_.page_size() - 1) / kv_.page_size();
}

absl::StatusOr<RequestId> Scheduler::add(SequenceRequest request) {
  const int64_t prompt = static_cast<int64_t>(request.prompt.size());
  if (prompt == 0)
    return absl::InvalidArgumentError("the prompt is empty: give at least one token");
  if (request.max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens is ", request.max_new_tokens, "; it must be at least 1"));
  }
  if (prompt > config_.max_context) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the prompt has ", prompt, " tokens; the context holds ", config_.max_context));
  }
  // The longest the sequence gets in the KV cache: the last output token is never fed back.
  const int64_t longest = std::min(config_.max_context, prompt + request.max_new_tokens - 1);
  if (pages_for(longest) > kv_.pool().num_pages()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request needs up to ", longest, " tokens of KV cache (", pages_for(longest),
        " pages) but the whole pool has ", kv_.pool().num_pages(), " pages of ", kv_.page_size(),
        " tokens; shorten the prompt or max_tokens, or give the server more KV pages"));
  }
  const RequestId id = next_id_++;
  Entry e;
  e.tokens = request.prompt;
  e.request = std::move(request);
  waiting_.emplace(id, std::move(e));
  stats_.prompt_tokens += prompt;
  return id;
}

void Scheduler::release(RequestId id, Entry& e, bool cache_tokens) {
  if (!e.seq) return;
  if (cache_tokens && prefix_ != nullptr) {
    // Best effort: a failed insert only loses a cache entry.
    (void)prefix_->insert(e.tokens, *e.seq, e.computed, /*include_partial_page=*/true);
  }
  (void)kv_.free(*e.seq);
  e.seq.reset();
}

absl::Status Scheduler::cancel(RequestId id) {
  if (auto it = waiting_.find(id); it != waiting_.end()) {
    release(id, it->second, false);
    waiting_.erase(it);
    return absl::OkStatus();
  }
  if (auto it = running_.find(id); it != running_.end()) {
    release(id, it->second, false);
    running_.erase(it);
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("request ", id, " is not waiting or running"));
}

absl::Status Scheduler::stop(RequestId id) {
  if (auto it = running_.find(id); it != running_.end()) {
    release(id, it->second, true);
    running_.erase(it);
    return absl::OkStatus();
  }
  return cancel(id);
}

absl::StatusOr<absl::Span<const int32_t>> Scheduler::tokens(RequestId id) const {
  if (auto it = running_.find(id); it != running_.end()) return it->second.tokens;
  if (auto it = waiting_.find(id); it != waiting_.end()) return it->second.tokens;
  return absl::NotFoundError(absl::StrCat("request ", id, " is not waiting or running"));
}

void Scheduler::preempt(RequestId id) {
  auto it = running_.find(id);
  Entry e = std::move(it->second);
  running_.erase(it);
  release(id, e, false);  // the point is to free its pages
  e.computed = 0;
  e.prompt_cached = false;
  waiting_.emplace(id, std::move(e));
  stats_.preemptions++;
}

// Tries to add `count` tokens of `seq` to the step's reservation batch, evicting cached prefix
// pages when the pool is short. True when added.
absl::StatusOr<bool> Scheduler::fits(std::vector<KvReservation>& batch, SeqId seq, int64_t count) {
  batch.push_back({seq, count});
  absl::StatusOr<int64_t> needed = kv_.pages_needed(batch);
  if (!needed.ok() && !absl::IsResourceExhausted(needed.status())) {
    batch.pop_back();
    return needed.status();
  }
  int64_t missing = needed.ok() ? *needed - kv_.free_pages() : kv_.pool().num_pages();
  if (missing > 0 && prefix_ != nullptr) {
    prefix_->evict(missing);
    needed = kv_.pages_needed(batch);
    missing = needed.ok() ? *needed - kv_.free_pages() : missing;
  }
  if (missing <= 0) return true;
  batch.pop_back();
  return false;
}

RequestEvent Scheduler::finish(RequestId id, FinishCause cause, absl::Status error) {
  RequestEvent ev;
  ev.request = id;
  ev.finished = true;
  ev.cause = cause;
  ev.error = std::move(error);
  return ev;
}

absl::StatusOr<ScheduledStep> Scheduler::schedule() {
  std::vector<Planned> plan;
  std::vector<KvReservation> batch;
  int64_t budget = config_.max_step_tokens;

  auto unplan = [&](RequestId id) {
    for (size_t i = 0; i < plan.size(); ++i) {
      if (plan[i].id != id) continue;
      budget += plan[i].count;
      plan.erase(plan.begin() + i);
      batch.erase(batch.begin() + i);
      return;
    }
  };
  // Schedules running request `id`, preempting younger ones while its tokens do not fit.
  auto schedule_running = [&](RequestId id) -> absl::Status {
    while (running_.contains(id)) {
      Entry& e = running_.at(id);
      const int64_t count =
          std::min<int64_t>(static_cast<int64_t>(e.tokens.size()) - e.computed, budget);
      absl::StatusOr<bool> ok = fits(batch, *e.seq, count);
      if (!ok.ok()) return ok.status();
      if (*ok) {
        plan.push_back({id, count});
        budget -= count;
        return absl::OkStatus();
      }
      const RequestId victim = running_.rbegin()->first;  // the youngest
      if (victim == id && running_.size() == 1) {
        // Alone and still out of pages: waiting would never help.
        release(id, e, false);
        running_.erase(id);
        pending_events_.push_back(
            finish(id, FinishCause::kError,
                   absl::ResourceExhaustedError(
                       absl::StrCat("the KV cache (", kv_.pool().num_pages(),
                                    " pages) cannot hold this request's next tokens even alone"))));
        return absl::OkStatus();
      }
      unplan(victim);
      preempt(victim);
    }
    return absl::OkStatus();
  };

  std::vector<RequestId> decodes, prefills;
  for (const auto& [id, e] : running_) {
    (static_cast<int64_t>(e.tokens.size()) - e.computed == 1 ? decodes : prefills).push_back(id);
  }
  for (const std::vector<RequestId>* group : {&decodes, &prefills}) {
    for (RequestId id : *group) {
      if (budget == 0 || static_cast<int32_t>(plan.size()) >= config_.max_running) break;
      if (absl::Status s = schedule_running(id); !s.ok()) return s;
    }
  }

  // Admission, FCFS.
  while (!waiting_.empty() && budget > 0 &&
         static_cast<int32_t>(running_.size()) < config_.max_running) {
    auto it = waiting_.begin();
    const RequestId id = it->first;
    Entry& e = it->second;
    const int64_t want = static_cast<int64_t>(e.tokens.size()) - 1;  // the last one is computed
    PrefixMatch match;
    if (prefix_ != nullptr) {
      absl::StatusOr<PrefixMatch> m = prefix_->acquire(e.tokens, want);
      if (!m.ok()) return m.status();
      match = *m;
    } else {
      match.seq = kv_.add_sequence();
    }
    const int64_t count =
        std::min<int64_t>(static_cast<int64_t>(e.tokens.size()) - match.cached_tokens, budget);
    absl::StatusOr<bool> ok = fits(batch, match.seq, count);
    if (!ok.ok()) return ok.status();
    if (!*ok) {
      (void)kv_.free(match.seq);
      if (running_.empty() && plan.empty()) {
        Entry dead = std::move(e);
        waiting_.erase(it);
        pending_events_.push_back(finish(
            id, FinishCause::kError,
            absl::ResourceExhaustedError(absl::StrCat("the KV cache (", kv_.pool().num_pages(),
                                                      " pages) cannot hold the request"))));
        continue;
      }
      break;  // FCFS: nobody overtakes the oldest waiting request
    }
    if (prefix_ != nullptr) prefix_->record_lookup(want, match.cached_tokens);
    stats_.cached_tokens += match.cached_tokens;
    e.seq = match.seq;
    e.computed = match.cached_tokens;
    plan.push_back({id, count});
    budget -= count;
    running_.emplace(id, std::move(e));
    waiting_.erase(it);
  }

  ScheduledStep step;
  std::vector<StepSequence> seqs;
  for (const Planned& p : plan) {
    const Entry& e = running_.at(p.id);
    seqs.push_back({*e.seq, static_cast<int32_t>(p.count)});
    step.requests.push_back(p.id);
    const bool samples = e.computed + p.count == static_cast<int64_t>(e.tokens.size());
    step.samples.push_back(samples ? 1 : 0);
    step.tokens.insert(step.tokens.end(), e.tokens.begin() + e.computed,
                       e.tokens.begin() + e.computed + p.count);
    if (!(samples && p.count == 1 && e.generated > 0)) {
      step.num_prefill_tokens += static_cast<int32_t>(p.count);
    }
  }
  if (seqs.empty()) return step;
  absl::StatusOr<StepMetadata> meta = build_step_metadata(kv_, seqs);
  if (!meta.ok()) {
    return absl::InternalError(absl::StrCat(
        "the scheduler's page count disagreed with the KV cache: ", meta.status().message()));
  }
  step.metadata = std::move(*meta);
  step.copies = kv_.take_pending_copies();
  return step;
}

std::vector<RequestEvent> Scheduler::commit(const ScheduledStep& step,
                                            absl::Span<const int32_t> tokens) {
  std::vector<RequestEvent> events = std::exchange(pending_events_, {});
  if (step.empty()) return events;
  stats_.steps++;
  stats_.computed_tokens += static_cast<int64_t>(step.tokens.size());
  for (int32_t s = 0; s < step.num_sequences(); ++s) {
    auto it = running_.find(step.requests[s]);
    if (it == running_.end()) continue;  // cancelled meanwhile (against the contract)
    const RequestId id = it->first;
    Entry& e = it->second;
    e.computed += step.metadata.qo_indptr[s + 1] - step.metadata.qo_indptr[s];
    if (!step.samples[s]) continue;
    if (prefix_ != nullptr && !e.prompt_cached) {
      // Whole pages now, so requests arriving while this one decodes share its prompt.
      (void)prefix_->insert(e.tokens, *e.seq, e.computed, /*include_partial_page=*/false);
      e.prompt_cached = true;
    }
    const int32_t t = s < static_cast<int32_t>(tokens.size()) ? tokens[s] : -1;
    const auto& stops = e.request.stop_ids;
    RequestEvent ev;
    ev.request = id;
    if (std::find(stops.begin(), stops.end(), t) != stops.end()) {
      ev = finish(id, FinishCause::kStopToken);
    } else {
      e.tokens.push_back(t);
      e.generated++;
      stats_.generated_tokens++;
      ev.token = t;
      if (e.generated >= e.request.max_new_tokens) {
        ev.finished = true;
        ev.cause = FinishCause::kMaxTokens;
      } else if (e.computed >= config_.max_context) {
        ev.finished = true;  // the new token would have no KV slot left in the context
        ev.cause = FinishCause::kContextFull;
      }
    }
    if (ev.finished) {
      release(id, e, true);
      running_.erase(it);
    }
    events.push_back(std::move(ev));
  }
  return events;
}

std::vector<RequestEvent> Scheduler::fail(const ScheduledStep& step, const absl::Status& error) {
  std::vector<RequestEvent> events = std::exchange(pending_events_, {});
  for (RequestId id : step.requests) {
    auto it = running_.find(id);
    if (it == running_.end()) continue;
    release(id, it->second, false);
    running_.erase(it);
    events.push_back(finish(id, FinishCause::kError, error));
  }
  return events;
}

}  // namespace kiln
