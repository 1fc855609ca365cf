// Element types of kiln values and weights, including GGUF's block-quantized formats.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kiln {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kFP8E4M3,
  kI32,
  kI64,
  kU8,
  // GGUF block-quantized types: a block of `block_elements` values packed in `block_bytes`.
  kQ8_0,
  kQ4_0,
  kQ4_1,
  kQ4_K,
  kQ6_K,
};

/// Name used in IR text and error messages ("bf16", "q4_k").
const std::string& dtype_name(DType dtype);
/// Inverse of dtype_name; nullopt for an unknown name.
std::optional<DType> parse_dtype(std::string_view name);

bool is_float(DType dtype);      // f32, f16, bf16, fp8e4m3
bool is_integer(DType dtype);    // i32, i64, u8
bool is_quantized(DType dtype);  // the GGUF block types

/// Elements per block: 1 for scalar types, 32 for Q8_0/Q4_0/Q4_1, 256 for the K-quants.
int64_t block_elements(DType dtype);
/// Bytes per block (for scalar types, bytes per element).
int64_t block_bytes(DType dtype);

}  // namespace kiln
