// A request's sampling settings and its seeded random stream. The engine draws one uniform per
// sampled token from the stream and hands it to the backend (SequenceSampling), so the tokens
// depend only on the seed and the logits — on either backend, whatever else is in the batch.
#pragma once

#include <cstdint>
#include <random>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/backend.h"

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

/// One sequence's sampling: its settings and its random stream.
///
/// The stream is std::mt19937_64 (its output is fixed by the C++ standard) and the uniform is
/// built from its raw bits (std::uniform_real_distribution is implementation-defined), so a seed
/// gives the same draws on every platform and standard library.
class SamplingStream {
 public:
  /// InvalidArgument for invalid params (see validate).
  static absl::StatusOr<SamplingStream> create(const SamplingParams& params);

  const SamplingParams& params() const { return params_; }
  /// The settings for the sequence's next sampled token, with a fresh uniform in [0, 1).
  /// Greedy requests draw too, so a stream's position is the number of tokens sampled.
  SequenceSampling next();

 private:
  explicit SamplingStream(const SamplingParams& params) : params_(params), rng_(params.seed) {}

  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace kiln
