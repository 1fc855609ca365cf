// expf for the reference backend's elementwise loops: branch-free arithmetic and bit operations
// only, so a loop over it vectorizes (std::exp is a libm call per element, and SiLU over a decode
// step's 30 × 1536 values spent more time in it than in some of the step's GEMVs). Accurate to
// about 2 ulp over the float range (tests/runtime/reference/fast_exp_test.cc); inputs below
// kFastExpMin give exp(kFastExpMin) ≈ 1.6e-38 instead of a denormal or 0, and above kFastExpMax
// give exp(kFastExpMax) instead of inf, which no caller (SiLU, exp of activations) can tell apart.
#pragma once

#include <cstdint>
#include <cstring>

namespace kiln {

inline constexpr float kFastExpMin = -87.0f;
inline constexpr float kFastExpMax = 88.0f;

inline float fast_expf(float x) {
  x = x < kFastExpMin ? kFastExpMin : x;
  x = x > kFastExpMax ? kFastExpMax : x;
  // x = n ln2 + r with n integral and |r| <= ln2 / 2; ln2 split in two so n ln2 is exact.
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to integer
  const float n = (x * kLog2e + kRound) - kRound;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  // e^r by its Taylor series to degree 7 (truncation error < 2e-9 relative on |r| <= 0.347).
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // times 2^n, built in the exponent field (n is in [-126, 127] after the clamp).
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

/// SiLU through fast_expf: x / (1 + e^-x).
inline float fast_siluf(float x) { return x / (1.0f + fast_expf(-x)); }

}  // namespace kiln
