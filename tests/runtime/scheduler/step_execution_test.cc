// The scheduler on the CPU reference backend (random-weight fixtures): with chunked prefill,
// batching, preemption and prefix-cache hits every request gets exactly the tokens the plain
// Engine gives it alone, greedy and seeded sampling alike.
#include "runtime/scheduler/step_execution.h"

#include <map>
#include <memory>
#include <optional>

#include <gtest/gtest.h>

#include "runtime/engine/engine.h"
#include "runtime/kv/prefix_cache.h"
#include "runtime/scheduler/scheduler.h"
#include "tests/fixtures.h"
#include "tests/runtime/model_plan.h"

namespace kiln {
namespace {

// The tiny fixture as an f32 plan on the reference backend with `pages` KV pages.
std::unique_ptr<testing::LoadedModel> load(int64_t pages) {
  StepLimits limits;
  limits.dtype = DType::kF32;
  BackendOptions options;
  options.num_threads = 2;
  options.kv_pages = pages;
  auto m = testing::load_model(testing::fixture("tiny"), limits, options);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::make_unique<testing::LoadedModel>(std::move(*m)) : nullptr;
}

struct Served {
  std::vector<std::vector<int32_t>> tokens;
  SchedulerStats stats;
  PrefixCacheStats prefix;
};

// Serves `reqs` (all arriving at once) through the scheduler on the backend.
Served serve(Backend& backend, const std::vector<GenerationRequest>& reqs, int32_t budget,
             bool prefix_cache) {
  Served run;
  absl::StatusOr<KvPageTables> kv = page_tables_for(backend);
  EXPECT_TRUE(kv.ok()) << kv.status();
  if (!kv.ok()) return run;
  PrefixCache prefix(*kv);
  Scheduler sched({.max_running = 8, .max_step_tokens = budget, .max_context = 256}, *kv,
                  prefix_cache ? &prefix : nullptr);
  std::map<RequestId, size_t> index;
  std::vector<std::optional<SamplingStream>> streams(reqs.size());
  run.tokens.resize(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    SequenceRequest r{reqs[i].prompt, reqs[i].max_new_tokens, reqs[i].stop_ids};
    index[*sched.add(r)] = i;
    streams[i].emplace(*SamplingStream::create(reqs[i].sampling));
  }
  while (!sched.idle()) {
    absl::StatusOr<ScheduledStep> step = sched.schedule();
    EXPECT_TRUE(step.ok()) << step.status();
    if (!step.ok() || step->empty()) break;
    std::vector<SamplingStream*> s;
    for (RequestId id : step->requests) s.push_back(&*streams[index[id]]);
    absl::StatusOr<std::vector<int32_t>> tokens = run_scheduled_step(backend, *step, s);
    EXPECT_TRUE(tokens.ok()) << tokens.status();
    if (!tokens.ok()) break;
    for (const RequestEvent& ev : sched.commit(*step, *tokens)) {
      EXPECT_NE(ev.cause, FinishCause::kError) << ev.error;
      if (ev.token) run.tokens[index[ev.request]].push_back(*ev.token);
    }
  }
  run.stats = sched.stats();
  run.prefix = prefix.stats();
  prefix.clear();
  EXPECT_EQ(kv->pool().used_pages(), 0);
  return run;
}

// What the plain engine gives each request alone.
std::vector<std::vector<int32_t>> alone(const std::vector<GenerationRequest>& reqs) {
  auto model = load(64);
  std::vector<std::vector<int32_t>> out;
  if (model == nullptr) return out;
  Engine engine(*model->backend, *model->tokenizer);
  for (const GenerationRequest& r : reqs) {
    auto res = engine.generate({r});
    EXPECT_TRUE(res.ok()) << res.status();
    out.push_back(res.ok() ? (*res)[0].tokens : std::vector<int32_t>{});
  }
  return out;
}

GenerationRequest greedy(std::vector<int32_t> prompt, int64_t n) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_new_tokens = n;
  r.stop_ids = {-1};  // random weights: never stop early
  return r;
}

std::vector<GenerationRequest> shared_prefix_requests() {
  std::vector<int32_t> system;  // 20 tokens: one full page of 16 and 4 more
  for (int i = 0; i < 20; ++i) system.push_back(40 + 3 * i);
  std::vector<GenerationRequest> reqs;
  for (int k = 0; k < 5; ++k) {
    std::vector<int32_t> p(system.begin(), system.begin() + (k == 4 ? 7 : 20));  // k=4: < 1 page
    for (int j = 0; j <= k; ++j) p.push_back(200 + 11 * k + j);
    reqs.push_back(greedy(p, 6 + k));
  }
  reqs[2].sampling = {0.9f, 20, 0.95f, 77};  // one sampled request
  return reqs;
}

TEST(ScheduledSteps, ServedTokensEqualTheEnginesAlone) {
  std::vector<GenerationRequest> reqs = shared_prefix_requests();
  const std::vector<std::vector<int32_t>> expected = alone(reqs);
  auto ample = load(64), small = load(5);
  ASSERT_NE(ample, nullptr);
  ASSERT_NE(small, nullptr);
  // Ample pages, small chunks, no prefix cache.
  Served plain = serve(*ample->backend, reqs, 12, false);
  EXPECT_EQ(plain.tokens, expected);
  // With the prefix cache: hits (full and partial pages), and the same tokens.
  Served cached = serve(*ample->backend, reqs, 12, true);
  EXPECT_EQ(cached.tokens, expected);
  EXPECT_GT(cached.prefix.hit_tokens, 0);
  // A pool too small for all at once.
  Served tight = serve(*small->backend, reqs, 64, true);
  EXPECT_EQ(tight.tokens, expected);
}

TEST(ScheduledSteps, PreemptedRequestsFinishWithTheirOwnTokens) {
  auto model = load(3);
  ASSERT_NE(model, nullptr);
  // Two requests of 10 prompt tokens growing to 30: one page each at first, two each later, in
  // a pool of three pages.
  std::vector<GenerationRequest> reqs = {greedy({5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, 20),
                                         greedy({15, 16, 17, 18, 19, 20, 21, 22, 23, 24}, 20)};
  reqs[1].sampling = {0.8f, 0, 0.9f, 5};
  const std::vector<std::vector<int32_t>> expected = alone(reqs);
  for (bool prefix_cache : {false, true}) {
    Served tight = serve(*model->backend, reqs, 64, prefix_cache);
    EXPECT_EQ(tight.tokens, expected);
    EXPECT_GT(tight.stats.preemptions, 0);
  }
}

}  // namespace
}  // namespace kiln
