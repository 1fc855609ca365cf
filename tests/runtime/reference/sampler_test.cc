// Sampler fed by SamplingStream: greedy, temperature (chi-square against softmax), top-k, top-p,
// seeds, bad logits, and the uniform-in picking the GPU sampling kernel must match.
#include "runtime/reference/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>

#include "runtime/engine/sampling.h"

namespace kiln {
namespace {

// The sampler fed by a seeded stream, as the engine (draws) and a backend (picks) use them.
struct SeededSampler {
  SamplingStream stream;
  Sampler sampler;
  absl::StatusOr<SampledToken> sample(absl::Span<const float> logits) {
    return sampler.sample(logits, stream.next());
  }
};
SeededSampler seeded(const SamplingParams& p) { return {*SamplingStream::create(p), {}}; }

std::vector<float> random_logits(int32_t vocab, uint64_t seed, float scale = 3.0f) {
  std::mt19937_64 rng(seed);
  std::vector<float> logits(vocab);
  // Raw bits to [-scale, scale): no implementation-defined distributions in tests either.
  for (float& x : logits) x = scale * (2.0f * static_cast<float>(rng() >> 40) / (1 << 24) - 1.0f);
  return logits;
}

std::vector<double> softmax(const std::vector<float>& logits, double temperature) {
  const double m = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp((logits[i] - m) / temperature);
  for (double& x : p) x /= sum;
  return p;
}

// Pearson chi-square statistic of observed counts against expected probabilities.
double chi_square(const std::vector<int>& counts, const std::vector<double>& probs, int n) {
  double chi2 = 0.0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double expected = probs[i] * n;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return chi2;
}

std::vector<int> histogram(SeededSampler& sampler, const std::vector<float>& logits, int n) {
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < n; ++i) ++counts[sampler.sample(logits)->token];
  return counts;
}

TEST(Sampler, GreedyTakesArgmaxLowestIndexOnTies) {
  SeededSampler sampler = seeded({});
  std::vector<float> logits = {1.0f, 5.0f, -2.0f, 5.0f, 0.5f};
  auto t = sampler.sample(logits);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->token, 1);
  // log-softmax of the raw logits, computed here independently.
  double sum = 0.0;
  for (float x : logits) sum += std::exp(x - 5.0);
  EXPECT_NEAR(t->logprob, -std::log(sum), 1e-6);
  EXPECT_EQ(t->sampling_logprob, 0.0f);

  std::vector<float> big = random_logits(128 * 1024, 7);
  big[77777] = 100.0f;
  EXPECT_EQ(sampler.sample(big)->token, 77777);
}

TEST(Sampler, TemperatureMatchesSoftmax) {
  const std::vector<float> logits = random_logits(8, 11, 2.0f);
  constexpr int kSamples = 100000;
  const std::vector<double> expected = softmax(logits, 0.7);
  SeededSampler sampler = seeded({.temperature = 0.7f, .seed = 1234});
  const std::vector<int> counts = histogram(sampler, logits, kSamples);
  // 7 degrees of freedom: P(chi2 > 24.3) = 0.001. The seed is fixed, so this is not flaky;
  // the bound still rejects a wrong temperature (checked against T = 1 below) or a bias.
  EXPECT_LT(chi_square(counts, expected, kSamples), 30.0);
  EXPECT_GT(chi_square(counts, softmax(logits, 1.0), kSamples), 300.0);

  // The sampling log-prob is the log of the temperature-scaled softmax.
  auto t = *sampler.sample(logits);
  EXPECT_NEAR(t.sampling_logprob, std::log(expected[t.token]), 1e-5);
}

TEST(Sampler, TopKNeverLeavesTheTopK) {
  const std::vector<float> logits = random_logits(1000, 5);
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  const std::set<int32_t> top5(order.begin(), order.begin() + 5);

  SeededSampler sampler = seeded({.temperature = 2.0f, .top_k = 5, .seed = 9});
  constexpr int kSamples = 8000;
  std::vector<int> counts = histogram(sampler, logits, kSamples);
  std::vector<int> top_counts;
  std::vector<float> top_logits;
  for (int32_t id = 0; id < 1000; ++id) {
    if (top5.contains(id)) {
      top_counts.push_back(counts[id]);
      top_logits.push_back(logits[id]);
    } else {
      ASSERT_EQ(counts[id], 0) << "token " << id << " is outside the top 5";
    }
  }
  // Within the top 5, the renormalized softmax (4 degrees of freedom: P(chi2 > 18.5) = 0.001).
  EXPECT_LT(chi_square(top_counts, softmax(top_logits, 2.0), kSamples), 22.0);

  // top_k = 1 is greedy; top_k >= V is off.
  SeededSampler one = seeded({.temperature = 5.0f, .top_k = 1, .seed = 3});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(one.sample(logits)->token, order[0]);
  SeededSampler all = seeded({.temperature = 1.0f, .top_k = 5000, .seed = 3});
  EXPECT_TRUE(all.sample(logits).ok());
}

TEST(Sampler, TopPKeepsTheMinimalNucleus) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 (in shuffled token order).
  const std::vector<float> logits = {std::log(0.15f), std::log(0.5f), std::log(0.05f),
                                     std::log(0.3f)};
  constexpr int kSamples = 20000;
  // 0.5 < 0.75 <= 0.8: the nucleus is {1, 3}, renormalized to 0.625 / 0.375.
  SeededSampler sampler = seeded({.temperature = 1.0f, .top_p = 0.75f, .seed = 21});
  std::vector<int> counts = histogram(sampler, logits, kSamples);
  EXPECT_EQ(counts[0], 0);
  EXPECT_EQ(counts[2], 0);
  std::vector<int> kept = {counts[1], counts[3]};
  EXPECT_LT(chi_square(kept, {0.625, 0.375}, kSamples), 15.0);  // 1 dof: P(> 10.8) = 0.001

  // 0.9 needs three tokens; a tiny top_p still keeps the most likely one.
  SeededSampler three = seeded({.temperature = 1.0f, .top_p = 0.9f, .seed = 21});
  counts = histogram(three, logits, kSamples);
  EXPECT_EQ(counts[2], 0);
  EXPECT_GT(counts[0], 0);
  SeededSampler tiny = seeded({.temperature = 1.0f, .top_p = 1e-6f, .seed = 21});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(tiny.sample(logits)->token, 1);

  // Combined with top-k over a large vocabulary.
  const std::vector<float> big = random_logits(128 * 1024, 99, 8.0f);
  SeededSampler both = seeded({.temperature = 0.8f, .top_k = 40, .top_p = 0.9f, .seed = 5});
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(both.sample(big).ok());
}

TEST(Sampler, TopPWithANucleusLargerThanTheFirstPrefix) {
  // A flat distribution: the nucleus holds thousands of tokens, more than the sampler's first
  // 1024-token prefix, so the prefix must grow. Compare with a brute-force nucleus.
  const std::vector<float> logits = random_logits(8192, 23, 0.5f);
  const std::vector<double> p = softmax(logits, 1.0);
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
  std::set<int32_t> nucleus;
  double cum = 0.0;
  for (int32_t id : order) {
    nucleus.insert(id);
    if ((cum += p[id]) >= 0.6) break;
  }
  ASSERT_GT(nucleus.size(), 2048u);
  SeededSampler sampler = seeded({.temperature = 1.0f, .top_p = 0.6f, .seed = 8});
  std::vector<int32_t> rank(logits.size());
  for (size_t r = 0; r < order.size(); ++r) rank[order[r]] = static_cast<int32_t>(r);
  int beyond_first_prefix = 0;
  for (int i = 0; i < 400; ++i) {
    const int32_t t = sampler.sample(logits)->token;
    ASSERT_TRUE(nucleus.contains(t)) << "token " << t << " is outside the nucleus";
    beyond_first_prefix += rank[t] >= 1024;
  }
  EXPECT_GT(beyond_first_prefix, 100);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDifferentTokens) {
  const std::vector<float> logits = random_logits(4096, 17, 1.0f);
  auto draw = [&](uint64_t seed) {
    SeededSampler s = seeded({.temperature = 1.0f, .top_p = 0.95f, .seed = seed});
    std::vector<int32_t> tokens;
    for (int i = 0; i < 32; ++i) tokens.push_back(s.sample(logits)->token);
    return tokens;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(Sampler, TheUniformAloneDecidesTheToken) {
  // Probabilities 0.5, 0.3, 0.2 over ids 0..2: the inverse CDF over the descending order
  // [0, 1, 2] maps u in [0, 0.5) to 0, [0.5, 0.8) to 1, [0.8, 1) to 2. Also with top_k = 3 (sorted
  // candidates) it must be the same.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  Sampler sampler;
  for (int32_t k : {0, 3}) {
    for (auto [u, want] : {std::pair{0.0f, 0}, std::pair{0.49f, 0}, std::pair{0.51f, 1},
                           std::pair{0.79f, 1}, std::pair{0.81f, 2}, std::pair{0.999f, 2}}) {
      EXPECT_EQ(sampler.sample(logits, {1.0f, k, 1.0f, u})->token, want) << "u " << u << " k " << k;
    }
  }
  // Greedy ignores the uniform.
  EXPECT_EQ(sampler.sample(logits, {0.0f, 0, 1.0f, 0.99f})->token, 0);
}

TEST(Sampler, BadLogitsAreErrors) {
  SeededSampler sampler = seeded({.temperature = 1.0f});
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(sampler.sample({}).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> nan = {0.0f, std::numeric_limits<float>::quiet_NaN()};
  EXPECT_EQ(sampler.sample(nan).status().code(), absl::StatusCode::kInvalidArgument);
  // Non-finite logits come from the model, not the request: the message says where to look.
  EXPECT_NE(sampler.sample(nan).status().message().find("weights or hyper-parameters"),
            std::string::npos);
  std::vector<float> pos_inf = {0.0f, inf};
  EXPECT_EQ(sampler.sample(pos_inf).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> all_masked = {-inf, -inf};
  EXPECT_EQ(sampler.sample(all_masked).status().code(), absl::StatusCode::kInvalidArgument);
  // Masked tokens are never drawn.
  std::vector<float> masked = {-inf, 0.0f, -inf, 0.0f};
  for (int i = 0; i < 100; ++i) {
    int32_t t = sampler.sample(masked)->token;
    EXPECT_TRUE(t == 1 || t == 3);
  }
}

}  // namespace
}  // namespace kiln
