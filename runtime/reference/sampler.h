// Sampler: greedy, temperature, top-k and top-p sampling of one logits row on the CPU, given the
// uniform draw the engine made for the sequence (SequenceSampling). The CPU reference of the GPU
// sampling kernel: same settings and same uniform give the same token.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/backend.h"

namespace kiln {

struct SampledToken {
  int32_t token = 0;
  /// log p(token) under the model's distribution (log-softmax of the raw logits, before
  /// temperature, top-k and top-p): what an OpenAI-style `logprobs` field reports.
  float logprob = 0.0f;
  /// log p(token) under the distribution actually sampled from (after temperature, top-k, top-p
  /// and renormalization); 0 for greedy.
  float sampling_logprob = 0.0f;
};

/// Picks tokens from logits rows. Holds only scratch memory: the randomness is the caller's
/// `uniform`, so a sequence's tokens depend only on its seed and its logits, never on other
/// sequences in the batch.
///
/// Cost for vocab V: greedy O(V); temperature alone O(V); with top_k = k, O(V + k log k)
/// (nth_element, then a sort of the k survivors); top_p without top_k sorts a prefix of 1024
/// tokens, growing it 4x while the nucleus is larger (a full sort only for a flat distribution).
class Sampler {
 public:
  /// Picks a token from `logits` (one row, [V]) with `s`'s settings and uniform (in [0, 1); the
  /// settings are the caller's to validate). InvalidArgument for an empty row, a NaN or +inf
  /// logit (the message says the model's weights or hyper-parameters are suspect), or a row
  /// where every logit is -inf. Ties go to the lowest token id.
  absl::StatusOr<SampledToken> sample(absl::Span<const float> logits, const SequenceSampling& s);

 private:
  // Scratch reused across calls: at V = 128k a fresh allocation per token would dominate.
  std::vector<int32_t> ids_;
  std::vector<double> weights_;  // [V] by token id
};

}  // namespace kiln
