// ggml block formats decoded exactly as ggml-quants.c does (see the block layouts below).
#include "models/dequantize.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"

namespace kiln {
namespace {

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));  // GGUF is little-endian, as is every host kiln targets
  return v;
}

// Q4_K packs 8 six-bit scales and 8 six-bit mins into 12 bytes (ggml's get_scale_min_k4).
void scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// block_q8_0 { f16 d; int8 qs[32]; }
void dequant_q8_0(const uint8_t* b, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i, b += 34, y += 32) {
    const float d = f16_to_f32(load_u16(b));
    const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
    for (int j = 0; j < 32; ++j) y[j] = qs[j] * d;
  }
}

// block_q4_0 { f16 d; uint8 qs[16]; }: element j in the low nibble of qs[j], j+16 in the high.
void dequant_q4_0(const uint8_t* b, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i, b += 18, y += 32) {
    const float d = f16_to_f32(load_u16(b));
    const uint8_t* qs = b + 2;
    for (int j = 0; j < 16; ++j) {
      const int x0 = (qs[j] & 0x0F) - 8;
      const int x1 = (qs[j] >> 4) - 8;
      y[j] = x0 * d;
      y[j + 16] = x1 * d;
    }
  }
}

// block_q4_1 { f16 d; f16 m; uint8 qs[16]; }: value = q * d + m.
void dequant_q4_1(const uint8_t* b, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i, b += 20, y += 32) {
    const float d = f16_to_f32(load_u16(b));
    const float m = f16_to_f32(load_u16(b + 2));
    const uint8_t* qs = b + 4;
    for (int j = 0; j < 16; ++j) {
      const int x0 = qs[j] & 0x0F;
      const int x1 = qs[j] >> 4;
      y[j] = x0 * d + m;
      y[j + 16] = x1 * d + m;
    }
  }
}

// block_q4_K { f16 d; f16 dmin; uint8 scales[12]; uint8 qs[128]; }: 8 sub-blocks of 32, each
// with its own 6-bit scale and min; value = d * sc * q - dmin * m.
void dequant_q4_k(const uint8_t* b, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i, b += 144) {
    const float d = f16_to_f32(load_u16(b));
    const float min = f16_to_f32(load_u16(b + 2));
    const uint8_t* scales = b + 4;
    const uint8_t* q = b + 16;
    int is = 0;
    uint8_t sc, m;
    for (int j = 0; j < 256; j += 64) {
      scale_min_k4(is + 0, scales, &sc, &m);
      const float d1 = d * sc;
      const float m1 = min * m;
      scale_min_k4(is + 1, scales, &sc, &m);
      const float d2 = d * sc;
      const float m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
      q += 32;
      is += 2;
    }
  }
}

// block_q6_K { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; f16 d; }: 6-bit values (4 low bits
// in ql, 2 high bits in qh) minus 32, one int8 scale per 16 values.
void dequant_q6_k(const uint8_t* b, int64_t nb, float* y) {
  for (int64_t i = 0; i < nb; ++i, b += 210) {
    const float d = f16_to_f32(load_u16(b + 208));
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    for (int n = 0; n < 256; n += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int8_t q1 = static_cast<int8_t>((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int8_t q2 = static_cast<int8_t>((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int8_t q3 = static_cast<int8_t>((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int8_t q4 = static_cast<int8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l + 0] = d * sc[is + 0] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

}  // namespace

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf / NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);  // rebias 15 -> 127
  } else if (mant == 0) {
    bits = sign;  // +-0
  } else {
    // Subnormal half: normalize into an f32 normal.
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400) == 0);
    bits = sign | static_cast<uint32_t>(112 - e) << 23 | ((mant & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

float bf16_to_f32(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {
    return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN: keep it a (quiet) NaN
  }
  bits += 0x7FFFu + ((bits >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<uint16_t>(bits >> 16);
}

float fp8e4m3_to_f32(uint8_t b) {
  const int e = (b >> 3) & 0xf, m = b & 7;
  float a;
  if (e == 0xf && m == 7) {
    a = std::numeric_limits<float>::quiet_NaN();
  } else if (e == 0) {
    a = std::ldexp(static_cast<float>(m), -9);  // subnormal: m/8 * 2^-6
  } else {
    a = std::ldexp(1.0f + m / 8.0f, e - 7);
  }
  return (b & 0x80) ? -a : a;
}

uint8_t f32_to_fp8e4m3(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0;
  const float a = std::fabs(f);
  if (a >= kFp8E4M3Max) return sign | 0x7e;  // satfinite: ±448 (infinities too)
  // Subnormal binade and below: a multiple of 2^-9, rounded to nearest even (the scaling by a
  // power of two is exact); m == 8 is the smallest normal, whose code is 8 too.
  if (a < 0x1p-6f) return sign | static_cast<uint8_t>(std::nearbyint(std::ldexp(a, 9)));
  int e = 0;
  const float frac = std::frexp(a, &e);  // a = frac * 2^e, frac in [0.5, 1)
  // Mantissa steps of 2^(e-1-3): round a's 3 fraction bits to nearest even (exact scaling).
  int q = static_cast<int>(std::nearbyint(std::ldexp(frac, 4)));  // in [8, 16]
  if (q == 16) {                                                  // rounded up into the next binade
    q = 8;
    ++e;
  }
  const int biased = e - 1 + 7;  // a = (q / 8) * 2^(e-1)
  const int code = (biased << 3) | (q - 8);
  if (code > 0x7e) return sign | 0x7e;  // 464 and above round past 448: saturate
  return sign | static_cast<uint8_t>(code);
}

absl::Status dequantize_row(DType dtype, const uint8_t* blocks, int64_t n, float* out) {
  const int64_t be = block_elements(dtype);
  if (!is_quantized(dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dequantize_row: ", dtype_name(dtype), " is not a block-quantized type"));
  }
  if (n < 0 || n % be != 0) {
    return absl::InvalidArgumentError(absl::StrCat("dequantize_row: ", n,
                                                   " elements is not a multiple of the ",
                                                   dtype_name(dtype), " block size ", be));
  }
  const int64_t nb = n / be;
  switch (dtype) {
    case DType::kQ8_0: dequant_q8_0(blocks, nb, out); break;
    case DType::kQ4_0: dequant_q4_0(blocks, nb, out); break;
    case DType::kQ4_1: dequant_q4_1(blocks, nb, out); break;
    case DType::kQ4_K: dequant_q4_k(blocks, nb, out); break;
    case DType::kQ6_K: dequant_q6_k(blocks, nb, out); break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("dequantize_row: ", dtype_name(dtype), " is not supported"));
  }
  return absl::OkStatus();
}

}  // namespace kiln
