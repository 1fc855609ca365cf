// Scalar float conversions (f16/bf16 <-> f32) and ggml block dequantization, bit-exact with ggml.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "ir/dtype.h"

namespace kiln {

/// IEEE half -> float, exact for every input (subnormals, infinities and NaNs included).
float f16_to_f32(uint16_t h);
/// bfloat16 -> float (exact: bf16 is the top half of an f32).
float bf16_to_f32(uint16_t b);
/// float -> bfloat16 with round-to-nearest-even; NaNs stay NaN (quiet), infinities stay infinite.
uint16_t f32_to_bf16(float f);

/// Dequantizes `n` elements stored as consecutive ggml blocks of `dtype` (Q8_0, Q4_0, Q4_1,
/// Q4_K or Q6_K) into `out`, with the same float operations in the same order as ggml's
/// reference `dequantize_row_*`, so results are bit-identical. `n` must be a multiple of
/// block_elements(dtype); `blocks` must hold n / block_elements(dtype) * block_bytes(dtype) bytes
/// (callers check this against the file; it is not checked here).
absl::Status dequantize_row(DType dtype, const uint8_t* blocks, int64_t n, float* out);

}  // namespace kiln
