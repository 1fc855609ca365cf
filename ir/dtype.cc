// Names and sizes of kiln's element types.
#include "ir/dtype.h"
#include <string>
#include <vector>

#include <array>
#include <utility>

namespace kiln {

static const char* dtype_name_cstr(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kFP8E4M3: return "fp8e4m3";
    case DType::kI32: return "i32";
    case DType::kI64: return "i64";
    case DType::kU8: return "u8";
    case DType::kQ8_0: return "q8_0";
    case DType::kQ4_0: return "q4_0";
    case DType::kQ4_1: return "q4_1";
    case DType::kQ4_K: return "q4_k";
    case DType::kQ6_K: return "q6_k";
  }
  return "?";
}

const std::string& dtype_name(DType v) {
  // Interned names: comparing with == compares text, and StrCat accepts them.
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (int i = 0; i <= static_cast<int>(DType::kQ6_K); ++i) {
      out.emplace_back(dtype_name_cstr(static_cast<DType>(i)));
    }
    return out;
  }();
  return names[static_cast<int>(v)];
}

std::optional<DType> parse_dtype(std::string_view name) {
  static constexpr std::array kAll = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kFP8E4M3,
                                      DType::kI32,  DType::kI64,  DType::kU8,   DType::kQ8_0,
                                      DType::kQ4_0, DType::kQ4_1, DType::kQ4_K, DType::kQ6_K};
  for (DType d : kAll) {
    if (dtype_name(d) == name) return d;
  }
  return std::nullopt;
}

bool is_float(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16 ||
         dtype == DType::kFP8E4M3;
}

bool is_integer(DType dtype) {
  return dtype == DType::kI32 || dtype == DType::kI64 || dtype == DType::kU8;
}

bool is_quantized(DType dtype) { return !is_float(dtype) && !is_integer(dtype); }

int64_t block_elements(DType dtype) {
  switch (dtype) {
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1: return 32;
    case DType::kQ4_K:
    case DType::kQ6_K: return 256;
    default: return 1;
  }
}

int64_t block_bytes(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kFP8E4M3: return 1;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
    case DType::kU8: return 1;
    case DType::kQ8_0: return 34;  // f16 scale + 32 x i8
    case DType::kQ4_0: return 18;  // f16 scale + 16 bytes of nibbles
    case DType::kQ4_1: return 20;  // f16 scale + f16 min + 16 bytes of nibbles
    case DType::kQ4_K:
      return 144;  // f16 d + f16 dmin + 12 bytes of 6-bit scales + 128 nibble bytes
    case DType::kQ6_K: return 210;  // 128 low nibbles + 64 high bits + 16 i8 scales + f16 d
  }
  return 0;
}

}  // namespace kiln
