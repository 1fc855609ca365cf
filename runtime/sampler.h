// Sampler: greedy, temperature, top-k and top-p sampling of one logits row on the CPU.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kiln {

/// A request's sampling settings.
struct SamplingParams {
  float temperature = 0.0f;  ///< 0 = greedy (top_k and top_p are then ignored)
  int32_t top_k = 0;         ///< keep the k most likely tokens; 0 = off
  float top_p = 1.0f;        ///< keep the smallest set with mass >= top_p; 1 = off
  uint64_t seed = 0;         ///< seeds the sequence's random stream
};

/// InvalidArgument naming the field: temperature < 0 or not finite, top_k < 0, top_p outside
/// (0, 1].
absl::Status validate(const SamplingParams& params);

struct SampledToken {
  int32_t token = 0;
  /// log p(token) under the model's distribution (log-softmax of the raw logits, before
  /// temperature, top-k and top-p): what an OpenAI-style `logprobs` field reports.
  float logprob = 0.0f;
  /// log p(token) under the distribution actually sampled from (after temperature, top-k, top-p
  /// and renormalization); 0 for greedy.
  float sampling_logprob = 0.0f;
};

/// Samples tokens for one sequence. It owns the sequence's random stream, so the tokens depend
/// only on the seed and the logits, never on other sequences in the batch.
///
/// The stream is std::mt19937_64 (its output is fixed by the C++ standard) and the uniform is
/// built from its raw 64 bits (std::uniform_real_distribution is implementation-defined), so a
/// seed gives the same tokens on every platform and standard library.
///
/// Cost for vocab V: greedy O(V); temperature alone O(V); with top_k = k, O(V + k log k)
/// (nth_element, then a sort of the k survivors); top_p without top_k sorts a prefix of 1024
/// tokens, growing it 4x while the nucleus is larger (a full sort only for a flat distribution).
class Sampler {
 public:
  static absl::StatusOr<Sampler> create(const SamplingParams& params);

  const SamplingParams& params() const { return params_; }

  /// Picks a token from `logits` (one row, [V]). InvalidArgument for an empty row, a NaN or
  /// +inf logit, or a row where every logit is -inf. Ties go to the lowest token id.
  absl::StatusOr<SampledToken> sample(absl::Span<const float> logits);

 private:
  explicit Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}
  /// A uniform double in [0, 1) from the top 53 bits of the generator.
  double next_uniform();

  SamplingParams params_;
  std::mt19937_64 rng_;
  // Scratch reused across calls: at V = 128k a fresh allocation per token would dominate.
  std::vector<int32_t> ids_;
  std::vector<double> weights_;  // [V] by token id
};

}  // namespace kiln
