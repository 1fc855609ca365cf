// Sampler: greedy, temperature, top-k and top-p sampling of one logits row on the CPU.
#include "runtime/reference/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace kiln {

absl::StatusOr<SampledToken> Sampler::sample(absl::Span<const float> logits,
                                             const SequenceSampling& params) {
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
      // A NaN or +inf logit means the forward pass overflowed or read garbage, not a bad request.
      return absl::InvalidArgumentError(absl::StrCat(
          "sampling: logit ", i, " is ", x,
          "; the model produced non-finite logits, so its weights or hyper-parameters (rms "
          "eps, rope theta, dtype) are suspect; check the checkpoint and its config"));
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

  if (params.temperature == 0.0f) return SampledToken{argmax, model_logprob(argmax), 0.0f};

  // weights[i] ∝ exp((x_i - max) / T), indexed by token id: the max maps to exp(0) = 1, so
  // nothing overflows and every candidate set holding the argmax has mass >= 1. Doubles keep
  // the nucleus cut-off exact enough at V = 128k.
  const double inv_t = 1.0 / params.temperature;
  weights_.resize(vocab);
  for (int32_t i = 0; i < vocab; ++i) {
    weights_[i] = std::exp((static_cast<double>(logits[i]) - max_logit) * inv_t);
  }

  // Candidates: ids_[0, n). Sorted by descending logit (ties: lower id first) when top-k or
  // top-p needs an order, else all tokens in id order.
  auto before = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  // Puts the k best tokens, sorted, at the front of ids_: O(V + k log k).
  auto sort_prefix = [&](int64_t k) {
    std::nth_element(ids_.begin(), ids_.begin() + (k - 1), ids_.end(), before);
    std::sort(ids_.begin(), ids_.begin() + k, before);
  };
  ids_.resize(vocab);
  std::iota(ids_.begin(), ids_.end(), 0);
  int64_t n = vocab;
  bool sorted = false;
  if (params.top_k > 0 && params.top_k < vocab) {
    n = params.top_k;
    sort_prefix(n);
    sorted = true;
  }
  auto prefix_mass = [&](int64_t count) {
    double sum = 0.0;
    for (int64_t j = 0; j < count; ++j) sum += weights_[ids_[j]];
    return sum;
  };
  double mass = prefix_mass(n);

  if (params.top_p < 1.0f) {
    // The smallest prefix (descending order) whose mass reaches top_p * mass; at least one
    // token. Without top-k, sort a growing prefix instead of all V tokens: the nucleus is
    // usually a few hundred tokens, so one O(V) nth_element round mostly suffices.
    const double target = static_cast<double>(params.top_p) * mass;
    for (int64_t k = std::min<int64_t>(n, 1024);; k = std::min<int64_t>(n, 4 * k)) {
      if (!sorted) sort_prefix(k);
      double cum = 0.0;
      int64_t cut = 0;
      for (int64_t j = 0; j < k && cut == 0; ++j) {
        cum += weights_[ids_[j]];
        if (cum >= target) cut = j + 1;
      }
      if (cut > 0 || k == n) {
        n = cut > 0 ? cut : n;  // rounding can leave cum a hair below target: keep all
        break;
      }
    }
    mass = prefix_mass(n);
  }

  // Inverse-CDF draw over the candidates; the last one absorbs rounding.
  const double r = static_cast<double>(params.uniform) * mass;
  int64_t chosen = n - 1;
  double cum = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    cum += weights_[ids_[j]];
    if (r < cum) {
      chosen = j;
      break;
    }
  }
  // A token with zero weight (exp underflow at low temperature) must never be drawn: r < cum
  // needs a positive step, and the rounding fallback steps back to a positive weight too.
  while (chosen > 0 && weights_[ids_[chosen]] == 0.0) --chosen;
  const int32_t token = ids_[chosen];
  return SampledToken{token, model_logprob(token),
                      static_cast<float>(std::log(weights_[token] / mass))};
}

}  // namespace kiln
