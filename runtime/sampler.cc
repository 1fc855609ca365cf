// Sampler: greedy, temperature, top-k and top-p sampling of one logits row on the CPU.
#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace kiln {

absl::Status validate(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || std::isinf(p.temperature)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampling: temperature must be a finite value >= 0 (0 = greedy), got ", p.temperature));
  }
  if (p.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling: top_k must be >= 0 (0 = off), got ", p.top_k));
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling: top_p must be in (0, 1] (1 = off), got ", p.top_p));
  }
  return absl::OkStatus();
}

absl::StatusOr<Sampler> Sampler::create(const SamplingParams& params) {
  if (absl::Status s = validate(params); !s.ok()) return s;
  return Sampler(params);
}

double Sampler::next_uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

absl::StatusOr<SampledToken> Sampler::sample(absl::Span<const float> logits) {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  if (vocab == 0) return absl::InvalidArgumentError("sampling: the logits row is empty");
  if (vocab > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError("sampling: the logits row is longer than int32");
  }

  // One pass: validate, argmax (first index wins ties) and the max for a stable softmax.
  int32_t argmax = 0;
  for (int32_t i = 0; i < vocab; ++i) {
    const float x = logits[i];
    if (std::isnan(x) || x == std::numeric_limits<float>::infinity()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sampling: logit ", i, " is ", x, "; logits must be finite or -inf"));
    }
    if (x > logits[argmax]) argmax = i;
  }
  const float max_logit = logits[argmax];
  if (max_logit == -std::numeric_limits<float>::infinity()) {
    return absl::InvalidArgumentError("sampling: every logit is -inf; nothing can be sampled");
  }
  // log p(i) = x_i - max - log(sum_j exp(x_j - max)); the model's log-prob, temperature 1.
  auto model_logprob = [&](int32_t token) {
    double sum = 0.0;
    for (float x : logits) sum += std::exp(static_cast<double>(x) - max_logit);
    return static_cast<float>(static_cast<double>(logits[token]) - max_logit - std::log(sum));
  };

  if (params_.temperature == 0.0f) return SampledToken{argmax, model_logprob(argmax), 0.0f};

  // Candidates in descending logit order (ties: lower id first) when top-k or top-p needs an
  // order; otherwise all tokens in id order.
  auto before = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  ids_.resize(vocab);
  std::iota(ids_.begin(), ids_.end(), 0);
  if (params_.top_k > 0 && params_.top_k < vocab) {
    std::nth_element(ids_.begin(), ids_.begin() + (params_.top_k - 1), ids_.end(), before);
    ids_.resize(params_.top_k);
    std::sort(ids_.begin(), ids_.end(), before);
  } else if (params_.top_p < 1.0f) {
    std::sort(ids_.begin(), ids_.end(), before);
  }

  // weights ∝ exp((x - max) / T): the max maps to exp(0) = 1, so nothing overflows and the
  // mass is at least 1. Doubles keep the nucleus cut-off exact enough at V = 128k.
  const double inv_t = 1.0 / params_.temperature;
  weights_.resize(ids_.size());
  double mass = 0.0;
  for (size_t i = 0; i < ids_.size(); ++i) {
    weights_[i] = std::exp((static_cast<double>(logits[ids_[i]]) - max_logit) * inv_t);
    mass += weights_[i];
  }

  size_t kept = ids_.size();
  if (params_.top_p < 1.0f) {
    // The smallest prefix (descending order) whose mass reaches top_p; at least one token.
    const double target = static_cast<double>(params_.top_p) * mass;
    double cum = 0.0;
    for (size_t i = 0; i < ids_.size(); ++i) {
      cum += weights_[i];
      if (cum >= target) {
        kept = i + 1;
        break;
      }
    }
    mass = std::accumulate(weights_.begin(), weights_.begin() + kept, 0.0);
  }

  // Inverse-CDF draw over the kept weights; the last kept token absorbs rounding.
  const double r = next_uniform() * mass;
  size_t chosen = kept - 1;
  double cum = 0.0;
  for (size_t i = 0; i < kept; ++i) {
    cum += weights_[i];
    if (r < cum) {
      chosen = i;
      break;
    }
  }
  // Tokens with zero weight (exp underflow at low temperature) can never be drawn: r < cum
  // needs a positive step. The fallback keeps that true for the last token too.
  while (chosen > 0 && weights_[chosen] == 0.0) --chosen;
  const int32_t token = ids_[chosen];
  return SampledToken{token, model_logprob(token),
                      static_cast<float>(std::log(weights_[chosen] / mass))};
}

}  // namespace kiln
