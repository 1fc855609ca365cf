// DType names and block sizes.
#include "ir/dtype.h"

#include <gtest/gtest.h>

namespace kiln {
namespace {

TEST(DType, NamesRoundTrip) {
  for (auto name : {"f32", "f16", "bf16", "fp8e4m3", "i32", "i64", "u8", "q8_0", "q4_0", "q4_1",
                    "q4_k", "q6_k"}) {
    auto d = parse_dtype(name);
    ASSERT_TRUE(d.has_value()) << name;
    EXPECT_EQ(dtype_name(*d), name);
  }
  EXPECT_FALSE(parse_dtype("f64").has_value());
}

TEST(DType, BlockSizesMatchGguf) {
  EXPECT_EQ(block_elements(DType::kQ4_1), 32);
  EXPECT_EQ(block_bytes(DType::kQ4_1), 20);
  EXPECT_EQ(block_elements(DType::kQ4_K), 256);
  EXPECT_EQ(block_bytes(DType::kQ6_K), 210);
  EXPECT_TRUE(is_quantized(DType::kQ8_0));
  EXPECT_FALSE(is_quantized(DType::kBF16));
  EXPECT_TRUE(is_integer(DType::kI32));
}

}  // namespace
}  // namespace kiln
