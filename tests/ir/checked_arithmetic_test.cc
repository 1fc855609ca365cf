// Checked size arithmetic at the int64 boundaries.
#include "ir/checked_arithmetic.h"

#include <limits>

#include <gtest/gtest.h>

namespace kiln {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();

TEST(CheckedArithmetic, MultiplyAtTheBoundary) {
  EXPECT_EQ(checked_mul(int64_t{1} << 31, int64_t{1} << 31), int64_t{1} << 62);
  EXPECT_EQ(checked_mul(int64_t{1} << 62, 2), std::nullopt);  // exactly 2^63
  EXPECT_EQ(checked_mul(kMax, 1), kMax);
  EXPECT_EQ(checked_mul(kMax, 2), std::nullopt);
  EXPECT_EQ(checked_mul(3037000499, 3037000499), int64_t{9223372030926249001});  // floor(sqrt)
  EXPECT_EQ(checked_mul(3037000500, 3037000500), std::nullopt);
  EXPECT_EQ(checked_mul(kMin, -1), std::nullopt);
  EXPECT_EQ(checked_mul(-(int64_t{1} << 62), 2), kMin);
  EXPECT_EQ(checked_mul(0, kMax), 0);
}

TEST(CheckedArithmetic, AddAtTheBoundary) {
  EXPECT_EQ(checked_add(kMax - 1, 1), kMax);
  EXPECT_EQ(checked_add(kMax, 1), std::nullopt);
  EXPECT_EQ(checked_add(kMin, -1), std::nullopt);
  EXPECT_EQ(checked_add(kMax, kMin), -1);
}

TEST(CheckedArithmetic, ProductStopsAtTheFirstOverflow) {
  EXPECT_EQ(checked_product({}), 1);
  EXPECT_EQ(checked_product({2, 3, 7}), 42);
  EXPECT_EQ(checked_product({int64_t{1} << 32, int64_t{1} << 32, 0}), std::nullopt);
  EXPECT_EQ(checked_product({int64_t{1} << 32, int64_t{1} << 30}), int64_t{1} << 62);
}

TEST(CheckedArithmetic, AlignUp) {
  EXPECT_EQ(checked_align_up(0, 256), 0);
  EXPECT_EQ(checked_align_up(1, 256), 256);
  // 2^63 - 256 is the largest multiple of 256 that fits; anything above it cannot be aligned.
  EXPECT_EQ(checked_align_up(kMax - 255, 256), kMax - 255);
  EXPECT_EQ(checked_align_up(kMax - 254, 256), std::nullopt);
  EXPECT_EQ(checked_align_up((kMax / 256) * 256 + 1, 256), std::nullopt);
  EXPECT_EQ(checked_align_up(5, 0), std::nullopt);
}

}  // namespace
}  // namespace kiln
