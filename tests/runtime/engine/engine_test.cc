// The engine on the reference backend over random-weight fixtures: batching gives each sequence
// exactly the tokens it gets alone; prefill, chunked prefill and decode agree; stops and limits.
#include "runtime/engine/engine.h"

#include <cmath>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/fixtures.h"
#include "tests/runtime/model_plan.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;

// An f32 plan of the fixture on the reference backend, and an engine over it.
struct Model {
  testing::LoadedModel loaded;
  Engine engine;
  explicit Model(testing::LoadedModel m)
      : loaded(std::move(m)), engine(*loaded.backend, *loaded.tokenizer) {}
};

std::unique_ptr<Model> load(const std::string& preset, StepLimits limits = {},
                            BackendOptions options = {}) {
  limits.dtype = DType::kF32;
  options.num_threads = 2;
  auto m = testing::load_model(testing::fixture(preset), limits, options);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::make_unique<Model>(std::move(*m)) : nullptr;
}

std::vector<int32_t> ids(std::initializer_list<int32_t> v) { return v; }

GenerationRequest greedy(std::vector<int32_t> prompt, int64_t n) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_new_tokens = n;
  r.stop_ids = {-1};  // random weights: never stop early on a special token
  return r;
}

class EngineFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineFixture, BatchedSequencesGetExactlyTheirOwnTokens) {
  auto model = load(GetParam());
  ASSERT_NE(model, nullptr);
  Engine& gen = model->engine;
  std::vector<GenerationRequest> reqs = {greedy(ids({5, 17, 42, 99, 3}), 12), greedy(ids({7}), 9),
                                         greedy(ids({300, 301, 302, 303, 304, 305, 306, 307, 308,
                                                     309, 310, 311, 312, 313, 314, 315, 316, 317}),
                                                14)};
  reqs[1].sampling = {0.8f, 40, 0.9f, 1234};  // a sampled one too
  auto together = gen.generate(reqs);
  ASSERT_TRUE(together.ok()) << together.status();
  for (size_t i = 0; i < reqs.size(); ++i) {
    auto alone = gen.generate({reqs[i]});
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_EQ((*together)[i].tokens, (*alone)[0].tokens) << "request " << i;
    EXPECT_EQ(static_cast<int64_t>((*alone)[0].tokens.size()), reqs[i].max_new_tokens);
  }
}

TEST_P(EngineFixture, ChunkedPrefillGivesTheSameTokens) {
  auto whole = load(GetParam());
  StepLimits small;
  small.max_tokens = 4;  // prompts of 11 tokens take 3 steps
  auto chunked = load(GetParam(), small);
  ASSERT_NE(whole, nullptr);
  ASSERT_NE(chunked, nullptr);
  auto req = greedy(ids({11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21}), 8);
  auto a = whole->engine.generate({req});
  auto b = chunked->engine.generate({req, greedy(ids({40, 41, 42}), 5)});
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*a)[0].tokens, (*b)[0].tokens);
}

TEST_P(EngineFixture, PrefillAndDecodePathsAgree) {
  auto model = load(GetParam());
  ASSERT_NE(model, nullptr);
  Engine& gen = model->engine;
  std::vector<int32_t> seq = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3};  // > one page
  auto rows = gen.score_incremental(seq);
  auto last = gen.prefill_logits(seq);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_TRUE(last.ok()) << last.status();
  ASSERT_EQ(rows->back().size(), last->size());
  double max_abs = 0, max_diff = 0;
  for (size_t i = 0; i < last->size(); ++i) {
    max_abs = std::max(max_abs, std::abs(static_cast<double>((*last)[i])));
    max_diff = std::max(max_diff, std::abs(static_cast<double>((*last)[i] - rows->back()[i])));
  }
  EXPECT_LE(max_diff, 1e-5 * max_abs) << "fp32 prefill vs token-by-token decode";
}

INSTANTIATE_TEST_SUITE_P(Presets, EngineFixture,
                         ::testing::Values("tiny", "tiny-gqa", "tiny-qwen2", "tiny-llama3"));

TEST(Engine, StopsOnStopTokensStringsAndLength) {
  auto model = load("tiny");
  ASSERT_NE(model, nullptr);
  Engine& gen = model->engine;
  auto base = gen.generate({greedy(ids({5, 6, 7}), 10)});
  ASSERT_TRUE(base.ok()) << base.status();
  const auto& toks = (*base)[0].tokens;
  ASSERT_EQ(toks.size(), 10u);
  EXPECT_EQ((*base)[0].finish, FinishReason::kMaxTokens);

  auto r = greedy(ids({5, 6, 7}), 10);
  r.stop_ids = {toks[4]};
  auto stopped = gen.generate({r});
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ((*stopped)[0].finish, FinishReason::kStopToken);
  auto first_stop = std::find(toks.begin(), toks.end(), toks[4]) - toks.begin();
  EXPECT_EQ(static_cast<int64_t>((*stopped)[0].tokens.size()), first_stop);

  // A stop string taken from the middle of the text: output is cut right before it.
  const std::string full = (*base)[0].text;
  ASSERT_GE(full.size(), 6u);
  const std::string stop = full.substr(full.size() / 2, 3);
  auto s = greedy(ids({5, 6, 7}), 10);
  s.stop_strings = {stop};
  std::string streamed;
  auto cut = gen.generate({s}, [&](size_t, const std::string& piece) { streamed += piece; });
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ((*cut)[0].finish, FinishReason::kStopString);
  EXPECT_EQ((*cut)[0].text, full.substr(0, full.find(stop)));
  EXPECT_EQ(streamed, (*cut)[0].text);  // nothing of the stop string leaked into the stream
}

TEST(Engine, ContextLimits) {
  StepLimits lim;
  lim.max_context = 16;
  auto model = load("tiny", lim);
  ASSERT_NE(model, nullptr);
  Engine& gen = model->engine;
  std::vector<int32_t> long_prompt(17, 9);
  auto too_long = gen.generate({greedy(long_prompt, 4)});
  EXPECT_THAT(too_long.status().message(),
              HasSubstr("the prompt has 17 tokens; the context holds 16"));
  auto full = gen.generate({greedy(std::vector<int32_t>(10, 9), 100)});
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ((*full)[0].finish, FinishReason::kContextFull);
  EXPECT_EQ((*full)[0].tokens.size(), 7u);  // positions 10..15 fed back, plus the last sampled one
  EXPECT_THAT(gen.generate({greedy({}, 4)}).status().message(), HasSubstr("empty prompt"));
  EXPECT_THAT(gen.generate({greedy(ids({100000}), 4)}).status().message(),
              HasSubstr("outside the vocabulary"));
}

TEST(Engine, PagePoolRunningOutIsAnError) {
  BackendOptions two_pages;
  two_pages.kv_pages = 2;  // of 16 tokens
  auto model = load("tiny", {}, two_pages);
  ASSERT_NE(model, nullptr);
  Engine& gen = model->engine;
  auto out = gen.generate({greedy(std::vector<int32_t>(20, 3), 40)});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(out.status().message(), HasSubstr("out of pages"));
}

}  // namespace
}  // namespace kiln
