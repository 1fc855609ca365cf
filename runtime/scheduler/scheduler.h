// Scheduler: continuous batching. Each step it picks which sequences run and how many tokens
// each feeds (decodes and chunked prefills mixed in one ragged step) under a token budget and a
// cap on running sequences, FCFS, reserving KV pages and preempting when the pool runs out.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/kv/page_tables.h"
#include "runtime/kv/prefix_cache.h"
#include "runtime/kv/step_metadata.h"

namespace kiln {

/// Requests are numbered in arrival order; the number is also their FCFS priority.
using RequestId = int64_t;

struct SchedulerConfig {
  int32_t max_running = 16;       ///< sequences in one step (<= the plan's S bound)
  int32_t max_step_tokens = 256;  ///< tokens in one step (<= the plan's T bound)
  int64_t max_context = 2048;     ///< longest sequence (prompt + generated)
};

/// What the scheduler needs of a request: token ids and when to stop. Sampling, text and stop
/// strings belong to the caller.
struct SequenceRequest {
  std::vector<int32_t> prompt;
  int64_t max_new_tokens = 16;
  std::vector<int32_t> stop_ids;  ///< a sampled stop id ends the request (not emitted)
};

enum class FinishCause { kStopToken, kMaxTokens, kContextFull, kStopped, kCancelled, kError };
const char* finish_cause_name(FinishCause cause);

/// One step to run: sequence `s` feeds tokens[qo_indptr[s] .. qo_indptr[s+1]) (metadata). Its
/// sampled token is kept only when `samples[s]` (the chunk reaches the end of what the request
/// has; a prefill chunk short of that yields logits nobody needs).
struct ScheduledStep {
  std::vector<RequestId> requests;  ///< [S]
  std::vector<uint8_t> samples;     ///< [S]
  std::vector<int32_t> tokens;      ///< [T]
  StepMetadata metadata;
  /// Page copies (copy-on-write) the backend runs (Backend::copy_kv_pages) before the step.
  std::vector<PageCopy> copies;
  int32_t num_prefill_tokens = 0;  ///< of T, tokens of chunks that are not single decodes

  bool empty() const { return requests.empty(); }
  int32_t num_sequences() const { return static_cast<int32_t>(requests.size()); }
};

/// What happened to a request in a step.
struct RequestEvent {
  RequestId request = 0;
  std::optional<int32_t> token;  ///< a new output token
  bool finished = false;
  FinishCause cause = FinishCause::kMaxTokens;
  absl::Status error;  ///< for kError
};

struct SchedulerStats {
  int64_t steps = 0;
  int64_t preemptions = 0;
  int64_t prompt_tokens = 0;     ///< prompt tokens of admitted requests
  int64_t computed_tokens = 0;   ///< tokens fed to the backend (recomputation included)
  int64_t generated_tokens = 0;  ///< output tokens
  int64_t cached_tokens = 0;     ///< tokens served by the prefix cache at admission
};

/// Policy, per step:
///  1. running sequences in decode (one token to feed), oldest first;
///  2. running sequences still prefilling, oldest first, each taking what is left of the budget;
///  3. waiting requests, oldest first (FCFS: admission stops at the first that does not fit),
///     starting from the longest cached prefix when there is a prefix cache.
/// Decodes go first so that a long prompt's prefill never stalls the others' next tokens
/// (chunked prefill, as in Sarathi-Serve and vLLM). When the KV pool cannot hold a sequence's
/// next tokens, the prefix cache gives back unreferenced pages first; then the youngest running
/// request is preempted: its pages are freed and it waits again, keeping the tokens it produced;
/// when readmitted it recomputes them (prefill) and continues with exactly the tokens it would
/// have produced. The same arrival order always gives the same steps.
///
/// Not thread-safe: one thread runs schedule()/commit() (the engine loop).
class Scheduler {
 public:
  /// `kv` (and `prefix`, when given) must outlive the scheduler.
  Scheduler(const SchedulerConfig& config, KvPageTables& kv, PrefixCache* prefix = nullptr);

  /// Queues a request. InvalidArgument when it can never run: empty prompt, max_new_tokens < 1,
  /// a prompt past the context, or more pages than the whole pool has.
  absl::StatusOr<RequestId> add(SequenceRequest request);
  /// Drops a waiting or running request and frees its pages. NotFound for an unknown or
  /// finished one. Must not be called between schedule() and commit() for a request in the step.
  absl::Status cancel(RequestId id);
  /// Ends a request early (a stop string matched): like cancel, but its tokens go into the
  /// prefix cache.
  absl::Status stop(RequestId id);

  /// Picks the next step and reserves its KV slots. An empty step means nothing can run (no
  /// requests). Errors are internal (an inconsistent KV cache).
  absl::StatusOr<ScheduledStep> schedule();
  /// Applies a step's sampled tokens ([S], one per sequence). Returns the events: new tokens
  /// and finished requests (whose pages are freed or handed to the prefix cache). Requests that
  /// could not be scheduled at all (the pool cannot hold even one of them alone) come back here
  /// too, finished with an error.
  std::vector<RequestEvent> commit(const ScheduledStep& step, absl::Span<const int32_t> tokens);
  /// The step failed on the backend: every request in it finishes with `error`.
  std::vector<RequestEvent> fail(const ScheduledStep& step, const absl::Status& error);

  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  bool idle() const { return waiting_.empty() && running_.empty(); }
  const SchedulerConfig& config() const { return config_; }
  const SchedulerStats& stats() const { return stats_; }
  /// The tokens a live request has so far (prompt + output).
  absl::StatusOr<absl::Span<const int32_t>> tokens(RequestId id) const;

 private:
  struct Entry {
    SequenceRequest request;
    std::vector<int32_t> tokens;  // prompt + output
    int64_t generated = 0;
    int64_t computed = 0;  // tokens with K/V in the cache (the sequence's length)
    std::optional<SeqId> seq;
    bool prompt_cached = false;  // full pages of the prompt handed to the prefix cache
  };
  struct Planned {
    RequestId id;
    int64_t count;
  };

  int64_t pages_for(int64_t tokens) const;
  absl::StatusOr<bool> fits(std::vector<KvReservation>& batch, SeqId seq, int64_t count);
  void preempt(RequestId id);
  void release(RequestId id, Entry& e, bool cache_tokens);
  RequestEvent finish(RequestId id, FinishCause cause, absl::Status error = absl::OkStatus());

  SchedulerConfig config_;
  KvPageTables& kv_;
  PrefixCache* prefix_;
  RequestId next_id_ = 0;
  std::map<RequestId, Entry> waiting_;  // ordered by arrival: FCFS, deterministic
  std::map<RequestId, Entry> running_;
  std::vector<RequestEvent> pending_events_;  // errors found while scheduling
  SchedulerStats stats_;
};

}  // namespace kiln
