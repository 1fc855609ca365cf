// Shared helpers of the reference-backend tests: random tensors, bf16/f16 encoding, running a
// graph built in the test, and error-bound checks.
#pragma once

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "ir/builder.h"
#include "models/dequantize.h"
#include "runtime/reference/host_tensor.h"
#include "runtime/reference/executor.h"

namespace kiln::testing {

inline std::vector<float> random_floats(int64_t n, uint32_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline HostTensor random_tensor(std::vector<int64_t> shape, uint32_t seed, float lo = -1.0f,
                                float hi = 1.0f) {
  const int64_t n = num_elements(shape);
  return HostTensor::floats(std::move(shape), random_floats(n, seed, lo, hi));
}

inline uint16_t to_bf16(float f) {  // round to nearest even
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b += 0x7fff + ((b >> 16) & 1);
  return static_cast<uint16_t>(b >> 16);
}
inline float from_bf16(uint16_t h) {
  uint32_t b = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
inline uint16_t to_f16(float f) {  // normal range only (test data is in [-4, 4])
  uint32_t b;
  std::memcpy(&b, &f, 4);
  const uint32_t sign = (b >> 16) & 0x8000;
  const int32_t exp = static_cast<int32_t>((b >> 23) & 0xff) - 127 + 15;
  uint32_t mant = b & 0x7fffff;
  if (exp <= 0) return static_cast<uint16_t>(sign);
  uint32_t h = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  if ((mant & 0x1fff) > 0x1000 || ((mant & 0x1fff) == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(h);
}
// The one f16 -> f32 conversion (models/dequantize.h).
inline float from_f16(uint16_t h) { return f16_to_f32(h); }

inline Type f32(Shape s) { return Type{DType::kF32, std::move(s)}; }
inline Type i32(Shape s) { return Type{DType::kI32, std::move(s)}; }
inline Dim c(int64_t v) { return Dim::constant(v); }
inline Dim sym(const std::string& n, int64_t off = 0) { return Dim::symbolic(n, off); }

/// Runs `g` once; fails the test on error.
inline std::vector<HostTensor> run_graph(const Graph& g, const InputBindings& in,
                                         ParamViews params = {}, int threads = 2) {
  auto ex = ReferenceExecutor::create(g, std::move(params), threads);
  EXPECT_TRUE(ex.ok()) << ex.status();
  if (!ex.ok()) return {};
  auto out = (*ex)->run(in);
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return {};
  return std::move(*out);
}

/// max |a - b| / max(1, |b|) (relative for large values, absolute near zero).
inline double max_rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isinf(a[i]) || std::isinf(b[i])) {
      if (a[i] != b[i]) return INFINITY;
      continue;
    }
    worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]) /
                                std::max(1.0, std::fabs(static_cast<double>(b[i]))));
  }
  return worst;
}

}  // namespace kiln::testing
