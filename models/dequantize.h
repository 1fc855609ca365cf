// Scalar float conversions (f16/bf16/fp8e4m3 <-> f32) and ggml block dequantization, bit-exact
// with ggml.
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

/// The largest finite e4m3 value (OCP FP8 E4M3 "fn": no infinities, 0x7f/0xff are NaN).
inline constexpr float kFp8E4M3Max = 448.0f;
/// e4m3 -> float, exact for every byte: normals (1 + m/8) * 2^(e-7), subnormals m * 2^-9, NaN.
float fp8e4m3_to_f32(uint8_t b);
/// float -> e4m3 as PTX `cvt.rn.satfinite.e4m3x2.f32` rounds: to nearest, ties to even (into
/// the subnormals too); a finite value or infinity beyond ±448 saturates to ±448; NaN is 0x7f.
uint8_t f32_to_fp8e4m3(float f);

/// Dequantizes `n` elements stored as consecutive ggml blocks of `dtype` (Q8_0, Q4_0, Q4_1,
/// Q4_K or Q6_K) into `out`, with the same float operations in the same order as ggml's
/// reference `dequantize_row_*`, so results are bit-identical. `n` must be a multiple of
/// block_elements(dtype); `blocks` must hold n / block_elements(dtype) * block_bytes(dtype) bytes
/// (callers check this against the file; it is not checked here).
absl::Status dequantize_row(DType dtype, const uint8_t* blocks, int64_t n, float* out);

}  // namespace kiln
