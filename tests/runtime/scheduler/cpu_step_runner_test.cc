// The scheduler on the CPU reference backend (random-weight fixtures): with chunked prefill,
// batching, preemption and prefix-cache hits every request gets exactly the tokens the plain
// Generator gives it alone, greedy and seeded sampling alike.
#include "runtime/scheduler/cpu_step_runner.h"

#include <map>
#include <memory>
#include <optional>

#include <gtest/gtest.h>

#include "runtime/generator.h"
#include "runtime/kv/prefix_cache.h"
#include "runtime/scheduler/scheduler.h"
#include "tests/fixtures.h"

namespace kiln {
namespace {

std::unique_ptr<CpuModel> load() {
  CpuModelOptions o;
  o.weights_dtype = DType::kF32;
  o.num_threads = 2;
  auto m = CpuModel::load(testing::fixture("tiny"), o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

struct Served {
  std::vector<std::vector<int32_t>> tokens;
  SchedulerStats stats;
  PrefixCacheStats prefix;
};

// Serves `reqs` (all arriving at once) through the scheduler on the reference backend.
Served serve(CpuModel& model, const std::vector<GenerationRequest>& reqs, int64_t pages,
             int32_t budget, bool prefix_cache) {
  Served run;
  absl::StatusOr<PagedKvCache> kv = make_cpu_kv_cache(model, pages);
  EXPECT_TRUE(kv.ok()) << kv.status();
  if (!kv.ok()) return run;
  PrefixCache prefix(*kv);
  Scheduler sched({.max_running = 8, .max_step_tokens = budget, .max_context = 256}, *kv,
                  prefix_cache ? &prefix : nullptr);
  CpuStepRunner runner(model, *kv);
  std::map<RequestId, size_t> index;
  std::vector<std::optional<Sampler>> samplers(reqs.size());
  run.tokens.resize(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    SequenceRequest r{reqs[i].prompt, reqs[i].max_new_tokens, reqs[i].stop_ids};
    index[*sched.add(r)] = i;
    samplers[i].emplace(*Sampler::create(reqs[i].sampling));
  }
  while (!sched.idle()) {
    absl::StatusOr<ScheduledStep> step = sched.schedule();
    EXPECT_TRUE(step.ok()) << step.status();
    if (!step.ok() || step->empty()) break;
    std::vector<Sampler*> s;
    for (RequestId id : step->requests) s.push_back(&*samplers[index[id]]);
    absl::StatusOr<std::vector<int32_t>> tokens = runner.run(*step, s);
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

TEST(CpuStepRunner, ServedTokensEqualTheGeneratorsAlone) {
  auto model = load();
  ASSERT_NE(model, nullptr);
  std::vector<GenerationRequest> reqs = shared_prefix_requests();
  std::vector<std::vector<int32_t>> expected;
  Generator gen(*model);
  for (const GenerationRequest& r : reqs) expected.push_back((*gen.generate({r}))[0].tokens);

  // Ample pages, small chunks, no prefix cache.
  Served plain = serve(*model, reqs, 64, 12, false);
  EXPECT_EQ(plain.tokens, expected);
  // With the prefix cache: hits, and the same tokens.
  Served cached = serve(*model, reqs, 64, 12, true);
  EXPECT_EQ(cached.tokens, expected);
  EXPECT_GT(cached.prefix.hit_tokens, 0);
  // A pool too small for all at once: preemption and recompute, still the same tokens.
  Served tight = serve(*model, reqs, 5, 64, true);
  EXPECT_EQ(tight.tokens, expected);
}

TEST(CpuStepRunner, PreemptedRequestsFinishWithTheirOwnTokens) {
  auto model = load();
  ASSERT_NE(model, nullptr);
  // Two requests of 10 prompt tokens growing to 30: one page each at first, two each later, in
  // a pool of three pages.
  std::vector<GenerationRequest> reqs = {greedy({5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, 20),
                                         greedy({15, 16, 17, 18, 19, 20, 21, 22, 23, 24}, 20)};
  reqs[1].sampling = {0.8f, 0, 0.9f, 5};
  Generator gen(*model);
  std::vector<std::vector<int32_t>> expected;
  for (const GenerationRequest& r : reqs) expected.push_back((*gen.generate({r}))[0].tokens);
  for (bool prefix_cache : {false, true}) {
    Served tight = serve(*model, reqs, 3, 64, prefix_cache);
    EXPECT_EQ(tight.tokens, expected);
    EXPECT_GT(tight.stats.preemptions, 0);
  }
}

}  // namespace
}  // namespace kiln
