// Sampling settings and the per-sequence seeded stream.
#include "runtime/engine/sampling.h"

#include <cmath>

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

absl::StatusOr<SamplingStream> SamplingStream::create(const SamplingParams& params) {
  if (absl::Status s = validate(params); !s.ok()) return s;
  return SamplingStream(params);
}

SequenceSampling SamplingStream::next() {
  // The top 24 bits: every value is exactly representable as a float and strictly below 1.
  const float uniform = static_cast<float>(rng_() >> 40) * 0x1.0p-24f;
  return {params_.temperature, params_.top_k, params_.top_p, uniform};
}

}  // namespace kiln
