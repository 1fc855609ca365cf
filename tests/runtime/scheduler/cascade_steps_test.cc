// Cascade attention through the serving path on the CPU reference backend (the random-weight
// tiny-llama3 fixture, whose context holds 1024 tokens): requests on one 320-token prompt share its
// pages through the prefix cache, so their decode steps carry a cascade layout
// (StepInputs::cascade) with `--cascade auto` and none with `off`, and the greedy tokens are the
// same either way and the same as each request's alone. The reference backend runs the layout it is
// given (an inconsistent one is refused).
#include <algorithm>
#include <map>
#include <memory>
#include <optional>

#include <gtest/gtest.h>

#include "runtime/engine/engine.h"
#include "runtime/kv/prefix_cache.h"
#include "runtime/scheduler/scheduler.h"
#include "runtime/scheduler/step_execution.h"
#include "tests/fixtures.h"
#include "tests/runtime/model_plan.h"

namespace kiln {
namespace {

std::unique_ptr<testing::LoadedModel> load() {
  StepLimits limits;
  limits.dtype = DType::kF32;
  BackendOptions options;
  options.num_threads = 2;
  options.kv_pages = 192;
  auto m = testing::load_model(testing::fixture("tiny-llama3"), limits, options);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::make_unique<testing::LoadedModel>(std::move(*m)) : nullptr;
}

// Forwards to a backend and keeps the cascade layouts of the steps it runs.
class RecordingBackend : public Backend {
 public:
  explicit RecordingBackend(Backend& b) : b_(b) {}
  std::string name() const override { return b_.name(); }
  const Plan& plan() const override { return b_.plan(); }
  int64_t kv_pages() const override { return b_.kv_pages(); }
  std::string load_report() const override { return b_.load_report(); }
  absl::Status copy_kv_pages(absl::Span<const PageCopy> copies) override {
    return b_.copy_kv_pages(copies);
  }
  absl::StatusOr<StepResult> run_step(const StepRequest& step) override {
    decode_steps += step.inputs.is_decode();
    if (step.inputs.cascade) layouts.push_back(*step.inputs.cascade);
    return b_.run_step(step);
  }
  int decode_steps = 0;
  std::vector<CascadeLayout> layouts;

 private:
  Backend& b_;
};

GenerationRequest greedy(std::vector<int32_t> prompt, int64_t n) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_new_tokens = n;
  r.stop_ids = {-1};  // random weights: never stop early
  return r;
}

// Four requests on one 320-token prompt (20 pages of 16), each with its own tail.
std::vector<GenerationRequest> shared_prompt_requests() {
  std::vector<int32_t> system;
  for (int i = 0; i < 320; ++i) system.push_back(3 + (i * 37) % 250);
  std::vector<GenerationRequest> reqs;
  for (int k = 0; k < 4; ++k) {
    std::vector<int32_t> p = system;
    for (int j = 0; j <= k; ++j) p.push_back(260 + 7 * k + j);
    reqs.push_back(greedy(p, 6));
  }
  return reqs;
}

// Serves `reqs` through the scheduler with the prefix cache: the first alone until its prompt is
// cached (its first token), then the others, which find the prompt's pages there.
std::vector<std::vector<int32_t>> serve(Backend& backend,
                                        const std::vector<GenerationRequest>& reqs,
                                        CascadeMode cascade) {
  std::vector<std::vector<int32_t>> out(reqs.size());
  absl::StatusOr<KvPageTables> kv = page_tables_for(backend);
  EXPECT_TRUE(kv.ok()) << kv.status();
  if (!kv.ok()) return out;
  PrefixCache prefix(*kv);
  Scheduler sched({.max_running = 8, .max_step_tokens = 128, .max_context = 512}, *kv, &prefix);
  std::map<RequestId, size_t> index;
  std::vector<SamplingStream> streams;
  for (const GenerationRequest& r : reqs) streams.push_back(*SamplingStream::create(r.sampling));
  auto add = [&](size_t i) {
    absl::StatusOr<RequestId> id =
        sched.add({reqs[i].prompt, reqs[i].max_new_tokens, reqs[i].stop_ids});
    ASSERT_TRUE(id.ok()) << id.status();
    index[*id] = i;
  };
  add(0);
  bool others = false;
  while (!sched.idle()) {
    absl::StatusOr<ScheduledStep> step = sched.schedule();
    EXPECT_TRUE(step.ok()) << step.status();
    if (!step.ok() || step->empty()) break;
    std::vector<SamplingStream*> s;
    for (RequestId id : step->requests) s.push_back(&streams[index[id]]);
    absl::StatusOr<std::vector<int32_t>> tokens = run_scheduled_step(backend, *step, s, cascade);
    EXPECT_TRUE(tokens.ok()) << tokens.status();
    if (!tokens.ok()) break;
    for (const RequestEvent& ev : sched.commit(*step, *tokens)) {
      EXPECT_NE(ev.cause, FinishCause::kError) << ev.error;
      if (ev.token) out[index[ev.request]].push_back(*ev.token);
    }
    if (!others && !out[0].empty()) {
      for (size_t i = 1; i < reqs.size(); ++i) add(i);
      others = true;
    }
  }
  EXPECT_GT(sched.stats().cached_tokens, 0);
  prefix.clear();
  return out;
}

TEST(CascadeSteps, SharedPromptDecodesAsCascadeWithThePlainTokens) {
  auto model = load();
  ASSERT_NE(model, nullptr);
  const std::vector<GenerationRequest> reqs = shared_prompt_requests();
  // Each request alone: plain paged attention (no page is shared).
  std::vector<std::vector<int32_t>> alone;
  Engine engine(*model->backend, *model->tokenizer);
  for (const GenerationRequest& r : reqs) {
    absl::StatusOr<std::vector<GenerationResult>> res = engine.generate({r});
    ASSERT_TRUE(res.ok()) << res.status();
    alone.push_back((*res)[0].tokens);
  }

  RecordingBackend on(*model->backend);
  const std::vector<std::vector<int32_t>> cascade = serve(on, reqs, CascadeMode::kAuto);
  EXPECT_EQ(cascade, alone);
  ASSERT_FALSE(on.layouts.empty()) << on.decode_steps << " decode steps, none with a layout";
  const int32_t ps = model->plan.kv.page_size;
  int32_t widest = 0;
  for (const CascadeLayout& l : on.layouts) {
    EXPECT_GE(l.prefix_len, 256);
    EXPECT_GE(l.num_members(), 2);
    EXPECT_LE(l.prefix_len, 320 / ps * ps);  // the cached prompt's whole pages at most
    widest = std::max(widest, l.num_members());
  }
  EXPECT_EQ(widest, 4);  // every request decodes on the shared prompt at some step

  RecordingBackend off(*model->backend);
  const std::vector<std::vector<int32_t>> plain = serve(off, reqs, CascadeMode::kOff);
  EXPECT_EQ(plain, alone);
  EXPECT_TRUE(off.layouts.empty());
  EXPECT_GT(off.decode_steps, 0);
}

// A layout that does not fit the step is refused by name, not run.
TEST(CascadeSteps, TheReferenceBackendRefusesAnInconsistentLayout) {
  auto model = load();
  ASSERT_NE(model, nullptr);
  absl::StatusOr<KvPageTables> kv = page_tables_for(*model->backend);
  ASSERT_TRUE(kv.ok()) << kv.status();
  const SeqId a = kv->add_sequence(), b = kv->add_sequence();
  ASSERT_TRUE(kv->reserve(a, 40).ok());
  ASSERT_TRUE(kv->reserve(b, 40).ok());
  absl::StatusOr<StepMetadata> m = build_step_metadata(*kv, {{a, 1}, {b, 1}});
  ASSERT_TRUE(m.ok()) << m.status();
  StepRequest req;
  req.inputs.tokens = {5, 6};
  req.inputs.metadata = *m;
  req.sampling.resize(2);
  // The two sequences have their own pages: no prefix is shared, so a layout claiming one lies.
  CascadeLayout lie;
  lie.prefix_len = 32;
  lie.prefix_pages = {m->kv_page_indices[0], m->kv_page_indices[1]};
  lie.prefix_seqs = {0, 1};
  lie.kv_start = {32, 32};
  req.inputs.cascade = lie;
  absl::StatusOr<StepResult> r = model->backend->run_step(req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  req.inputs.cascade.reset();
  EXPECT_TRUE(model->backend->run_step(req).ok());
}

}  // namespace
}  // namespace kiln
