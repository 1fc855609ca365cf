// SamplingStream: parameter validation names the field; draws are uniform in [0, 1) and fixed by
// the seed.
#include "runtime/engine/sampling.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>

namespace kiln {
namespace {

TEST(SamplingStream, InvalidParamsNameTheField) {
  auto expect_invalid = [](SamplingParams p, const std::string& field) {
    auto s = SamplingStream::create(p);
    ASSERT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(s.status().message().find(field), std::string::npos) << s.status();
  };
  expect_invalid({.temperature = -0.5f}, "temperature");
  expect_invalid({.temperature = std::numeric_limits<float>::quiet_NaN()}, "temperature");
  expect_invalid({.top_k = -1}, "top_k");
  expect_invalid({.top_p = 0.0f}, "top_p");
  expect_invalid({.top_p = 1.5f}, "top_p");
  EXPECT_TRUE(validate({.temperature = 1.0f, .top_k = 10, .top_p = 1.0f}).ok());
}

TEST(SamplingStream, UniformsAreInRangeAndSeeded) {
  SamplingStream a = *SamplingStream::create({.seed = 7});
  SamplingStream b = *SamplingStream::create({.seed = 7});
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    const float u = a.next().uniform;
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    ASSERT_EQ(u, b.next().uniform);
    sum += u;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
}

TEST(SamplingStream, DifferentSeedsDrawDifferently) {
  SamplingStream a = *SamplingStream::create({.seed = 1});
  SamplingStream b = *SamplingStream::create({.seed = 2});
  int same = 0;
  for (int i = 0; i < 100; ++i) same += a.next().uniform == b.next().uniform;
  EXPECT_LT(same, 5);
  // The settings travel with every draw.
  SamplingStream c = *SamplingStream::create({.temperature = 0.5f, .top_k = 7, .top_p = 0.9f});
  SequenceSampling s = c.next();
  EXPECT_EQ(s.temperature, 0.5f);
  EXPECT_EQ(s.top_k, 7);
  EXPECT_EQ(s.top_p, 0.9f);
}

}  // namespace
}  // namespace kiln
