// rope_inv_freq: base frequencies and the llama3 frequency-dependent scaling (HF
// `_compute_llama3_parameters`), in double precision.
#include "ir/rope.h"

#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"

namespace kiln {

absl::StatusOr<std::vector<double>> rope_inv_freq(const Attributes& attrs) {
  absl::StatusOr<double> theta = attrs.get_float("theta");
  if (!theta.ok()) return theta.status();
  absl::StatusOr<int64_t> rd = attrs.get_int("rotary_dim");
  if (!rd.ok()) return rd.status();
  if (*theta <= 0 || *rd <= 0 || *rd % 2 != 0) {
    return absl::InvalidArgumentError("rope: theta must be positive, rotary_dim positive and even");
  }
  std::vector<double> inv(*rd / 2);
  for (int64_t i = 0; i < *rd / 2; ++i) {
    inv[i] = std::pow(*theta, -2.0 * static_cast<double>(i) / static_cast<double>(*rd));
  }
  if (!attrs.has("scaling")) return inv;
  absl::StatusOr<std::string> kind = attrs.get_string("scaling");
  if (!kind.ok()) return kind.status();
  if (*kind != "llama3") {
    return absl::InvalidArgumentError(absl::StrCat("rope: unknown scaling \"", *kind, "\""));
  }
  absl::StatusOr<double> factor = attrs.get_float("scaling_factor");
  absl::StatusOr<double> low = attrs.get_float("scaling_low_freq_factor");
  absl::StatusOr<double> high = attrs.get_float("scaling_high_freq_factor");
  absl::StatusOr<double> orig = attrs.get_float("scaling_original_max_positions");
  for (const auto* s : {&factor, &low, &high, &orig}) {
    if (!s->ok()) return s->status();
  }
  if (*high <= *low || *factor <= 0) {
    return absl::InvalidArgumentError(
        "rope: llama3 scaling needs high_freq_factor > low_freq_factor "
        "and a positive factor");
  }
  const double low_wavelen = *orig / *low;
  const double high_wavelen = *orig / *high;
  for (double& f : inv) {
    const double wavelen = 2 * std::numbers::pi / f;
    if (wavelen < high_wavelen) continue;  // high frequencies: unchanged
    if (wavelen > low_wavelen) {
      f = f / *factor;  // low frequencies: interpolated by the full factor
    } else {
      const double smooth = (*orig / wavelen - *low) / (*high - *low);
      f = (1 - smooth) * f / *factor + smooth * f;
    }
  }
  return inv;
}

}  // namespace kiln
