// Derived plan weights (plan/weight_parts.h): row parts are one run of the stored bytes each,
// column parts one range per row (a row-parallel shard of a row-major matrix is strided), and
// every part is checked against its source (missing, derived, other dtype or dims, out of range,
// a split quantization block, mixed axes, a shape that does not match the stored bytes).
#include "plan/weight_parts.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kiln {
namespace {

using ::testing::HasSubstr;

// Two stored matrices: "a" f32[4, 8] and "q" q4_0[2, 64] (2 blocks of 18 bytes per row).
Plan sources() {
  Plan p;
  PlanWeight a;
  a.name = "a";
  a.dtype = DType::kF32;
  a.shape = {4, 8};
  a.file = "/ckpt";
  a.offset = 1000;
  a.size = 4 * 8 * 4;
  p.weights.push_back(a);
  PlanWeight q;
  q.name = "q";
  q.dtype = DType::kQ4_0;
  q.shape = {2, 64};
  q.file = "/ckpt";
  q.size = 2 * 2 * 18;
  p.weights.push_back(q);
  return p;
}

PlanWeight derived(DType dtype, std::vector<int64_t> shape, std::vector<PlanWeightPart> parts) {
  PlanWeight w;
  w.name = "d";
  w.dtype = dtype;
  w.shape = std::move(shape);
  w.parts = std::move(parts);
  return w;
}

std::vector<std::pair<uint64_t, uint64_t>> spans(const std::vector<WeightByteRange>& r) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const WeightByteRange& b : r) out.emplace_back(b.offset, b.size);
  return out;
}

TEST(WeightParts, RowsAreOneRangeEach) {
  const Plan p = sources();
  auto r = weight_byte_ranges(
      p,
      derived(DType::kF32, {3, 8}, {{"a", SliceAxis::kRows, 1, 2}, {"a", SliceAxis::kRows, 2, 4}}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(spans(*r), (std::vector<std::pair<uint64_t, uint64_t>>{{32, 32}, {64, 64}}));
  EXPECT_EQ((*r)[0].source, &p.weights[0]);
}

TEST(WeightParts, ColumnsAreOneRangePerRowAndPart) {
  const Plan p = sources();
  // Columns [2, 6) of a [4, 8] f32 matrix: 16 bytes at 8 + 32 r.
  auto r = weight_byte_ranges(p, derived(DType::kF32, {4, 4}, {{"a", SliceAxis::kCols, 2, 6}}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(spans(*r),
            (std::vector<std::pair<uint64_t, uint64_t>>{{8, 16}, {40, 16}, {72, 16}, {104, 16}}));
  // Two column parts interleave row by row: columns [6, 8) then [0, 1).
  r = weight_byte_ranges(
      p,
      derived(DType::kF32, {4, 3}, {{"a", SliceAxis::kCols, 6, 8}, {"a", SliceAxis::kCols, 0, 1}}));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 8u);
  EXPECT_EQ(spans(*r)[0], (std::pair<uint64_t, uint64_t>{24, 8}));
  EXPECT_EQ(spans(*r)[1], (std::pair<uint64_t, uint64_t>{0, 4}));
  EXPECT_EQ(spans(*r)[2], (std::pair<uint64_t, uint64_t>{56, 8}));
  // Whole Q4_0 blocks: columns [32, 64) of each row are its second block.
  r = weight_byte_ranges(p, derived(DType::kQ4_0, {2, 32}, {{"q", SliceAxis::kCols, 32, 64}}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(spans(*r), (std::vector<std::pair<uint64_t, uint64_t>>{{18, 18}, {54, 18}}));
}

TEST(WeightParts, PartsAreCheckedAgainstTheirSources) {
  const Plan p = sources();
  auto error = [&](const PlanWeight& w) {
    return std::string(weight_byte_ranges(p, w).status().message());
  };
  EXPECT_THAT(error(derived(DType::kQ4_0, {2, 16}, {{"q", SliceAxis::kCols, 16, 32}})),
              HasSubstr("part 0: cols [16, 32) split a q4_0 block of 32 values"));
  EXPECT_THAT(error(derived(DType::kF32, {4, 9}, {{"a", SliceAxis::kCols, 0, 9}})),
              HasSubstr("cols [0, 9) are outside 'a' (8 cols)"));
  EXPECT_THAT(error(derived(DType::kF32, {3, 4}, {{"a", SliceAxis::kCols, 0, 4}})),
              HasSubstr("dims other than the cols differ from [3,4]"));
  EXPECT_THAT(error(derived(DType::kF32, {4, 5},
                            {{"a", SliceAxis::kCols, 0, 4}, {"a", SliceAxis::kRows, 0, 1}})),
              HasSubstr("part 1: its parts mix rows and columns"));
  EXPECT_THAT(error(derived(DType::kF32, {4, 3}, {{"a", SliceAxis::kCols, 0, 4}})),
              HasSubstr("its parts hold 4 cols, its shape [4,3] needs 3"));
  EXPECT_THAT(error(derived(DType::kF32, {8}, {{"a", SliceAxis::kCols, 0, 4}})),
              HasSubstr("column parts make a matrix, not [8]"));
  Plan lying = sources();
  lying.weights[0].shape = {4, int64_t{1} << 62};  // a hostile plan: the shape overflows
  EXPECT_THAT(std::string(weight_byte_ranges(
                              lying, derived(DType::kF32, {4, 1}, {{"a", SliceAxis::kCols, 0, 1}}))
                              .status()
                              .message()),
              HasSubstr("does not match its 128 stored bytes"));
}

}  // namespace
}  // namespace kiln
