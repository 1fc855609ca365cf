// Scheduler properties over random arrival / cancel / length sequences on a fake runner whose
// tokens depend on the whole stored context: each request gets exactly the tokens it gets alone
// (through chunking, batching, preemption and prefix hits), no page leaks, every admitted request
// finishes or errs once, and no step exceeds the token budget or the running cap.
#include "runtime/scheduler/scheduler.h"

#include <map>
#include <random>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/kv/prefix_cache.h"
#include "runtime/scheduler/step_execution.h"
#include "tests/runtime/scheduler/fake_backend.h"

namespace kiln {
namespace {

using testing::fake_kv;
using testing::FakeBackend;
using ::testing::HasSubstr;

constexpr int32_t kVocab = 97;
constexpr int32_t kStop = 0;

struct Outcome {
  std::vector<int32_t> tokens;
  int finishes = 0;
  FinishCause cause = FinishCause::kMaxTokens;
};

// One schedule → run → commit round; checks the step's bounds. Returns false when idle.
bool step_once(Scheduler& sched, FakeBackend& runner, std::map<RequestId, Outcome>& out,
               std::vector<std::vector<int32_t>>* trace = nullptr) {
  absl::StatusOr<ScheduledStep> step = sched.schedule();
  EXPECT_TRUE(step.ok()) << step.status();
  if (!step.ok()) return false;
  EXPECT_LE(static_cast<int32_t>(step->tokens.size()), sched.config().max_step_tokens);
  EXPECT_LE(step->num_sequences(), sched.config().max_running);
  std::vector<RequestEvent> events;
  if (step->empty()) {
    events = sched.commit(*step, {});
  } else {
    std::vector<SamplingStream*> greedy(step->num_sequences(), nullptr);
    absl::StatusOr<std::vector<int32_t>> tokens = run_scheduled_step(runner, *step, greedy);
    events = tokens.ok() ? sched.commit(*step, *tokens) : sched.fail(*step, tokens.status());
    if (trace) trace->push_back(step->tokens);
  }
  for (const RequestEvent& ev : events) {
    Outcome& o = out[ev.request];
    if (ev.token) o.tokens.push_back(*ev.token);
    if (ev.finished) {
      o.finishes++;
      o.cause = ev.cause;
    }
  }
  return !step->empty() || !events.empty();
}

SequenceRequest request(std::vector<int32_t> prompt, int64_t n) {
  SequenceRequest r;
  r.prompt = std::move(prompt);
  r.max_new_tokens = n;
  r.stop_ids = {kStop};
  return r;
}

// What the request gives alone: a fresh scheduler, a pool that holds it, no prefix cache.
std::vector<int32_t> alone(const SequenceRequest& r) {
  KvPageTables kv = fake_kv(64, 4);
  FakeBackend runner(64, 4, kVocab);
  Scheduler sched({.max_running = 1, .max_step_tokens = 1024, .max_context = 256}, kv);
  RequestId id = *sched.add(r);
  std::map<RequestId, Outcome> out;
  while (step_once(sched, runner, out)) {
  }
  EXPECT_EQ(out[id].finishes, 1);
  return out[id].tokens;
}

// Prompts from a few shared stems so that prefix hits (full and partial pages) happen.
std::vector<int32_t> random_prompt(std::mt19937& rng) {
  static const std::vector<std::vector<int32_t>> stems = {
      {}, {11, 12, 13}, {11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, {30, 31, 32, 33, 34, 35, 36, 37}};
  std::vector<int32_t> p = stems[rng() % stems.size()];
  const int extra = 1 + static_cast<int>(rng() % 20);
  for (int i = 0; i < extra; ++i) p.push_back(1 + static_cast<int32_t>(rng() % (kVocab - 1)));
  return p;
}

struct Scenario {
  uint32_t seed;
  bool prefix_cache;
};

// One random scenario, checked throughout; returns the scheduler's statistics.
SchedulerStats run_scenario(const Scenario sc) {
  std::mt19937 rng(sc.seed);
  const int32_t page_size = 4;
  KvPageTables kv = fake_kv(24, page_size);  // small: forces preemption
  FakeBackend runner(24, page_size, kVocab);
  PrefixCache prefix(kv);
  SchedulerConfig config{.max_running = 1 + static_cast<int32_t>(rng() % 6),
                         .max_step_tokens = 4 + static_cast<int32_t>(rng() % 29),
                         .max_context = 64};
  Scheduler sched(config, kv, sc.prefix_cache ? &prefix : nullptr);

  std::map<RequestId, SequenceRequest> requests;
  std::map<RequestId, Outcome> out;
  std::set<RequestId> cancelled;
  int arrivals = 0;
  for (int round = 0; round < 400 && (arrivals < 40 || !sched.idle()); ++round) {
    while (arrivals < 40 && rng() % 3 == 0) {
      SequenceRequest r = request(random_prompt(rng), 1 + rng() % 24);
      absl::StatusOr<RequestId> id = sched.add(r);
      if (!id.ok()) {
        ADD_FAILURE() << id.status();
        return {};
      }
      requests[*id] = r;
      ++arrivals;
    }
    if (!requests.empty() && rng() % 10 == 0) {  // cancel a random live request
      auto it = requests.begin();
      std::advance(it, rng() % requests.size());
      if (out[it->first].finishes == 0 && !cancelled.contains(it->first)) {
        EXPECT_TRUE(sched.cancel(it->first).ok());
        cancelled.insert(it->first);
      }
    }
    if (rng() % 17 == 0 && !sched.idle()) runner.fail_next();
    step_once(sched, runner, out);
  }
  EXPECT_TRUE(sched.idle()) << "requests left after 400 rounds";
  for (const auto& [id, r] : requests) {
    const Outcome& o = out[id];
    if (cancelled.contains(id)) {
      EXPECT_EQ(o.finishes, 0) << "request " << id << " finished after its cancel";
      continue;
    }
    EXPECT_EQ(o.finishes, 1) << "request " << id;
    if (o.finishes != 1) continue;
    if (o.cause == FinishCause::kError) continue;  // an injected backend failure
    EXPECT_EQ(o.tokens, alone(r)) << "request " << id;
  }
  prefix.clear();
  EXPECT_EQ(kv.pool().used_pages(), 0) << "pages leaked";
  EXPECT_EQ(kv.num_sequences(), 0);
  return sched.stats();
}

std::vector<Scenario> scenarios() {
  std::vector<Scenario> v;
  for (uint32_t seed = 1; seed <= 24; ++seed) v.push_back({seed, seed % 2 == 0});
  return v;
}
class SchedulerProperty : public ::testing::TestWithParam<Scenario> {};

TEST_P(SchedulerProperty, RandomArrivalsCancelsAndLengths) { run_scenario(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Seeds, SchedulerProperty, ::testing::ValuesIn(scenarios()),
                         [](const ::testing::TestParamInfo<Scenario>& info) {
                           return "seed" + std::to_string(info.param.seed) +
                                  (info.param.prefix_cache ? "_prefix" : "_plain");
                         });

TEST(Scheduler, ScenariosExercisePreemptionAndPrefixHits) {
  // The random scenarios are meant to cover preemption and prefix hits, not only batching.
  int64_t preemptions = 0, cached = 0;
  for (const Scenario& sc : scenarios()) {
    SchedulerStats s = run_scenario(sc);
    preemptions += s.preemptions;
    cached += s.cached_tokens;
  }
  EXPECT_GT(preemptions, 0);
  EXPECT_GT(cached, 0);
}

TEST(Scheduler, PreemptsTheYoungestAndItStillFinishesWithItsTokens) {
  KvPageTables kv = fake_kv(6, 4);  // 24 token slots for two requests wanting 20 each
  FakeBackend runner(6, 4, kVocab);
  Scheduler sched({.max_running = 4, .max_step_tokens = 64, .max_context = 64}, kv);
  SequenceRequest a = request({1, 2, 3, 4, 5, 6}, 14), b = request({7, 8, 9, 10, 11, 12}, 14);
  a.stop_ids = b.stop_ids = {-1};
  RequestId ia = *sched.add(a), ib = *sched.add(b);
  std::map<RequestId, Outcome> out;
  while (step_once(sched, runner, out)) {
  }
  EXPECT_GT(sched.stats().preemptions, 0);
  EXPECT_EQ(out[ia].tokens, alone(a));
  EXPECT_EQ(out[ib].tokens, alone(b));
  EXPECT_EQ(out[ia].tokens.size(), 14u);
  EXPECT_EQ(kv.pool().used_pages(), 0);
}

TEST(Scheduler, ChunkedPrefillRunsBesideDecodesWithinTheBudget) {
  KvPageTables kv = fake_kv(64, 4);
  FakeBackend runner(64, 4, kVocab);
  Scheduler sched({.max_running = 4, .max_step_tokens = 8, .max_context = 128}, kv);
  SequenceRequest shortr = request({1, 2}, 20);
  shortr.stop_ids = {-1};
  std::vector<int32_t> long_prompt;
  for (int i = 0; i < 35; ++i) long_prompt.push_back(1 + i);  // 5 chunks of 7
  std::map<RequestId, Outcome> out;
  RequestId first = *sched.add(shortr);
  ASSERT_TRUE(step_once(sched, runner, out));  // the short one's prefill
  RequestId second = *sched.add(request(long_prompt, 3));
  // Each step decodes the first request.
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<ScheduledStep> step = sched.schedule();
    ASSERT_TRUE(step.ok());
    ASSERT_EQ(step->num_sequences(), 2);
    EXPECT_EQ(step->requests[0], first);  // decodes first
    EXPECT_EQ(step->requests[1], second);
    EXPECT_EQ(step->tokens.size(), 8u);
    EXPECT_EQ(step->samples[1], i == 4 ? 1 : 0);
    EXPECT_EQ(step->num_prefill_tokens, 7);
    std::vector<SamplingStream*> greedy(2, nullptr);
    auto tokens = run_scheduled_step(runner, *step, greedy);
    ASSERT_TRUE(tokens.ok());
    for (const RequestEvent& ev : sched.commit(*step, *tokens)) {
      if (ev.token) out[ev.request].tokens.push_back(*ev.token);
    }
  }
  while (step_once(sched, runner, out)) {
  }
  EXPECT_EQ(out[second].tokens, alone(request(long_prompt, 3)));
}

TEST(Scheduler, SameArrivalOrderGivesTheSameSteps) {
  auto trace = [] {
    KvPageTables kv = fake_kv(10, 4);
    FakeBackend runner(10, 4, kVocab);
    PrefixCache prefix(kv);
    Scheduler sched({.max_running = 3, .max_step_tokens = 6, .max_context = 64}, kv, &prefix);
    std::mt19937 rng(7);
    for (int i = 0; i < 8; ++i) EXPECT_TRUE(sched.add(request(random_prompt(rng), 9)).ok());
    std::map<RequestId, Outcome> out;
    std::vector<std::vector<int32_t>> steps;
    while (step_once(sched, runner, out, &steps)) {
    }
    return steps;
  };
  std::vector<std::vector<int32_t>> a = trace(), b = trace();
  EXPECT_GT(a.size(), 5u);
  EXPECT_EQ(a, b);
}

TEST(Scheduler, RejectsRequestsThatCanNeverRun) {
  KvPageTables kv = fake_kv(4, 4);
  Scheduler sched({.max_running = 4, .max_step_tokens = 64, .max_context = 32}, kv);
  EXPECT_THAT(sched.add(request({}, 4)).status().message(), HasSubstr("empty"));
  EXPECT_THAT(sched.add(request({1}, 0)).status().message(), HasSubstr("at least 1"));
  EXPECT_THAT(sched.add(request(std::vector<int32_t>(33, 1), 1)).status().message(),
              HasSubstr("context holds 32"));
  absl::Status pages = sched.add(request(std::vector<int32_t>(10, 1), 12)).status();
  EXPECT_TRUE(absl::IsInvalidArgument(pages));
  EXPECT_THAT(pages.message(), HasSubstr("the whole pool has 4 pages"));
  EXPECT_TRUE(sched.add(request(std::vector<int32_t>(10, 1), 7)).ok());  // 16 tokens: 4 pages
}

TEST(Scheduler, CancelFreesPagesAndUnknownIsNotFound) {
  KvPageTables kv = fake_kv(16, 4);
  FakeBackend runner(16, 4, kVocab);
  Scheduler sched({.max_running = 4, .max_step_tokens = 64, .max_context = 64}, kv);
  RequestId id = *sched.add(request({1, 2, 3, 4, 5, 6, 7}, 30));
  std::map<RequestId, Outcome> out;
  step_once(sched, runner, out);
  EXPECT_GT(kv.pool().used_pages(), 0);
  EXPECT_TRUE(sched.cancel(id).ok());
  EXPECT_EQ(kv.pool().used_pages(), 0);
  EXPECT_TRUE(absl::IsNotFound(sched.cancel(id)));
  EXPECT_TRUE(sched.idle());
}

}  // namespace
}  // namespace kiln
