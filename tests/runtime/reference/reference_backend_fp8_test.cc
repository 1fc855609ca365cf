// The reference backend with an fp8e4m3 KV cache (`--kv-dtype fp8e4m3`) on the random-weight
// fixtures: the plan records the dtype and sizes pages with their scales; page copies carry the
// scales; and prefix reuse is safe: a prompt whose prefix comes from the prefix cache (full pages
// shared, the partly filled last page copied on write) gets the logits of computing the whole
// prompt afresh. That holds because every page carries its own scales, one per (slot, KV head),
// written with the row and copied with the page: a shared page dequantizes the same for every
// sequence that reads it (a per-sequence or per-layer running scale, as some engines keep, would
// not), which is what goes wrong in the peers' FP8 caches with prefix reuse.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "runtime/kv/page_tables.h"
#include "runtime/kv/prefix_cache.h"
#include "runtime/kv/step_metadata.h"
#include "runtime/reference/reference_backend.h"
#include "tests/fixtures.h"
#include "tests/runtime/model_plan.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;

StepLimits fp8_limits() {
  StepLimits l;
  l.max_tokens = 128;
  l.max_seqs = 4;
  l.max_context = 128;
  l.kv_dtype = DType::kFP8E4M3;
  return l;
}

std::unique_ptr<ReferenceBackend> make_backend(const Plan& plan, int64_t pages) {
  BackendOptions o;
  o.kv_pages = pages;
  o.num_threads = 2;
  auto b = ReferenceBackend::create(plan, o);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : nullptr;
}

TEST(ReferenceBackendFp8, ThePlanRecordsTheDtypeAndPagesCountTheScales) {
  auto plan = testing::plan_for_model(testing::fixture("tiny-gqa"), fp8_limits());
  ASSERT_TRUE(plan.ok()) << plan.status();
  const KvLayout& kv = plan->kv;
  EXPECT_EQ(kv.dtype, DType::kFP8E4M3);
  ASSERT_TRUE(plan->limits.kv_dtype.has_value());
  EXPECT_EQ(*plan->limits.kv_dtype, DType::kFP8E4M3);
  EXPECT_NE(plan->ir.find("%k_scales.0 : f32[NP,"), std::string::npos) << plan->ir;
  // A page: 1-byte codes and a 4-byte scale per (slot, KV head), K and V, every layer.
  const int64_t per_layer = 2 * (int64_t{kv.page_size} * kv.num_kv_heads * kv.head_dim +
                                 int64_t{kv.page_size} * kv.num_kv_heads * 4);
  EXPECT_EQ(kv.bytes_per_page(), kv.num_layers * per_layer);
  KvLayout bf16 = kv;
  bf16.dtype = DType::kBF16;
  // Twice the tokens for the same bytes, less the scales' share: 2D / (D + 4) as many.
  const double ratio = static_cast<double>(bf16.bytes_per_token()) / kv.bytes_per_token();
  EXPECT_NEAR(ratio, 2.0 * kv.head_dim / (kv.head_dim + 4.0), 1e-9);
  const int64_t budget = int64_t{1} << 30;
  EXPECT_GT(kv.pages_for_budget(budget), bf16.pages_for_budget(budget) * 3 / 2);

  auto b = make_backend(*plan, 4);
  ASSERT_NE(b, nullptr);
  EXPECT_THAT(b->load_report(), HasSubstr("fp8e4m3 KV with per-(slot, KV head) scales"));
  ASSERT_NE(b->k_scales(0), nullptr);
  EXPECT_EQ(b->scales_per_page(), int64_t{kv.page_size} * kv.num_kv_heads);
}

TEST(ReferenceBackendFp8, PageCopiesCarryTheScales) {
  auto plan = testing::plan_for_model(testing::fixture("tiny"), fp8_limits());
  ASSERT_TRUE(plan.ok()) << plan.status();
  auto b = make_backend(*plan, 4);
  ASSERT_NE(b, nullptr);
  const int64_t n = b->scales_per_page();
  for (int32_t l = 0; l < plan->kv.num_layers; ++l) {
    for (int64_t j = 0; j < n; ++j) {
      b->k_scales(l)[1 * n + j] = 0.5f + l + j;
      b->v_scales(l)[1 * n + j] = 0.25f + l + j;
    }
  }
  ASSERT_TRUE(b->copy_kv_pages({{1, 2}}).ok());
  for (int32_t l = 0; l < plan->kv.num_layers; ++l) {
    for (int64_t j = 0; j < n; ++j) {
      ASSERT_EQ(b->k_scales(l)[2 * n + j], 0.5f + l + j);
      ASSERT_EQ(b->v_scales(l)[2 * n + j], 0.25f + l + j);
    }
  }
}

// Runs a step of `seqs` (each with its new tokens) after the pending copy-on-write copies, and
// returns the last token's logits of every sequence.
std::vector<std::vector<float>> run(
    ReferenceBackend& b, KvPageTables& tables,
    const std::vector<std::pair<SeqId, std::vector<int32_t>>>& seqs) {
  std::vector<StepSequence> step;
  std::vector<int32_t> tokens;
  for (const auto& [seq, toks] : seqs) {
    step.push_back({seq, static_cast<int32_t>(toks.size())});
    tokens.insert(tokens.end(), toks.begin(), toks.end());
  }
  auto meta = build_step_metadata(tables, step);
  EXPECT_TRUE(meta.ok()) << meta.status();
  if (!meta.ok()) return {};
  EXPECT_TRUE(b.copy_kv_pages(tables.take_pending_copies()).ok());
  StepRequest req{StepInputs{tokens, *meta}, std::vector<SequenceSampling>(seqs.size()), true};
  auto out = b.run_step(req);
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return {};
  const int64_t vocab = b.plan().model.vocab_size;
  std::vector<std::vector<float>> rows;
  for (size_t s = 0; s < seqs.size(); ++s) {
    rows.emplace_back(out->logits.begin() + s * vocab, out->logits.begin() + (s + 1) * vocab);
  }
  return rows;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i)
    d = std::max(d, static_cast<double>(std::fabs(a[i] - b[i])));
  return d;
}

// A 21-token prefix (page size 16: one full page and 5 tokens of the next) is computed and cached;
// two prompts reuse it (the full page shared, the partial page copied on write when they append)
// and then decode a token. Each gets, within f32 summation order, the logits of the same prompt
// computed from scratch in a fresh sequence, and the same next token. Random-weight fixtures
// with MHA (tiny) and GQA (tiny-gqa).
class Fp8PrefixReuse : public ::testing::TestWithParam<std::string> {};

TEST_P(Fp8PrefixReuse, GivesTheLogitsOfRecomputingThePrefix) {
  auto plan = testing::plan_for_model(testing::fixture(GetParam()), fp8_limits());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->kv.page_size, 16);
  auto b = make_backend(*plan, 32);
  ASSERT_NE(b, nullptr);
  auto tables = KvPageTables::create({plan->kv.page_size, 32});
  ASSERT_TRUE(tables.ok());
  PrefixCache cache(*tables);
  const int64_t vocab = plan->model.vocab_size;
  std::vector<int32_t> prefix;
  for (int i = 0; i < 21; ++i) prefix.push_back(static_cast<int32_t>((i * 37 + 11) % vocab));
  const std::vector<std::vector<int32_t>> suffixes = {{5, 9, 200, 13, 77, 3, 41}, {301, 8, 8, 150}};

  // The prefix, computed once and cached with its partly filled page.
  SeqId first = tables->add_sequence();
  run(*b, *tables, {{first, prefix}});
  ASSERT_TRUE(cache.insert(prefix, first, 21, /*include_partial_page=*/true).ok());
  ASSERT_TRUE(tables->free(first).ok());

  for (const std::vector<int32_t>& suffix : suffixes) {
    std::vector<int32_t> prompt = prefix;
    prompt.insert(prompt.end(), suffix.begin(), suffix.end());
    auto hit = cache.acquire(prompt, static_cast<int64_t>(prompt.size()) - 1);
    ASSERT_TRUE(hit.ok()) << hit.status();
    ASSERT_EQ(hit->cached_tokens, 21);  // the partial page too
    auto reused = run(*b, *tables, {{hit->seq, suffix}});
    ASSERT_EQ(reused.size(), 1u);

    SeqId fresh = tables->add_sequence();
    auto recomputed = run(*b, *tables, {{fresh, prompt}});
    ASSERT_EQ(recomputed.size(), 1u);
    const double scale = *std::max_element(recomputed[0].begin(), recomputed[0].end()) -
                         *std::min_element(recomputed[0].begin(), recomputed[0].end());
    EXPECT_LE(max_abs_diff(reused[0], recomputed[0]), 1e-4 * scale) << GetParam();
    const int32_t next = static_cast<int32_t>(
        std::max_element(recomputed[0].begin(), recomputed[0].end()) - recomputed[0].begin());
    EXPECT_EQ(std::max_element(reused[0].begin(), reused[0].end()) - reused[0].begin(), next);

    // A decode step on each: the same token gives the same logits.
    auto reused_next = run(*b, *tables, {{hit->seq, {next}}});
    auto fresh_next = run(*b, *tables, {{fresh, {next}}});
    ASSERT_EQ(reused_next.size(), 1u);
    ASSERT_EQ(fresh_next.size(), 1u);
    EXPECT_LE(max_abs_diff(reused_next[0], fresh_next[0]), 1e-4 * scale) << GetParam();
    ASSERT_TRUE(tables->free(hit->seq).ok());
    ASSERT_TRUE(tables->free(fresh).ok());
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Fp8PrefixReuse, ::testing::Values("tiny", "tiny-gqa"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

}  // namespace
}  // namespace kiln
