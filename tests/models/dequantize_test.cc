// Scalar conversions and ggml block dequantization: exhaustive f16, hand-built blocks from the
// documented formulas, and random blocks of every type against gguf-py's dequantization.
#include "models/dequantize.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include "models/gguf.h"

namespace kiln {
namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(F16, EveryValueMatchesTheCompiler) {
  for (uint32_t h = 0; h < 65536; ++h) {
    _Float16 x;
    const uint16_t h16 = static_cast<uint16_t>(h);
    std::memcpy(&x, &h16, 2);
    const float want = static_cast<float>(x);
    const float got = f16_to_f32(h16);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << h;
    } else {
      ASSERT_EQ(bits(got), bits(want)) << "half bits " << h;
    }
  }
}

TEST(BF16, RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(f32_to_bf16(from_bits(0x3F808000)), 0x3F80);  // tie, even stays
  EXPECT_EQ(f32_to_bf16(from_bits(0x3F818000)), 0x3F82);  // tie, odd rounds up
  EXPECT_EQ(f32_to_bf16(from_bits(0x3F808001)), 0x3F81);  // above half
  EXPECT_EQ(f32_to_bf16(from_bits(0x3F807FFF)), 0x3F80);  // below half
  EXPECT_EQ(f32_to_bf16(-INFINITY), 0xFF80);
  EXPECT_EQ(f32_to_bf16(from_bits(0x7F7FFFFF)), 0x7F80);  // max float rounds to inf
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(from_bits(0x7F800001)))));  // payload in low bits
  EXPECT_EQ(bf16_to_f32(0xC040), -3.0f);
}

void put_f16(uint8_t* p, float v) {
  const _Float16 h = static_cast<_Float16>(v);
  std::memcpy(p, &h, 2);
}

TEST(Dequantize, HandBuiltQ8_0Q4_0Q4_1) {
  uint8_t q8[34];
  put_f16(q8, 0.5f);
  for (int i = 0; i < 32; ++i) q8[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i - 16));
  float out[32];
  ASSERT_TRUE(dequantize_row(DType::kQ8_0, q8, 32, out).ok());
  for (int i = 0; i < 32; ++i) EXPECT_EQ(out[i], (i - 16) * 0.5f);

  uint8_t q4[20];
  put_f16(q4, 2.0f);
  put_f16(q4 + 2, -1.0f);  // Q4_1's min
  for (int j = 0; j < 16; ++j) q4[4 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  ASSERT_TRUE(dequantize_row(DType::kQ4_1, q4, 32, out).ok());
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], j * 2.0f - 1.0f);
    EXPECT_EQ(out[j + 16], (15 - j) * 2.0f - 1.0f);
  }
  // Q4_0 has the same nibbles right after its scale, and subtracts 8.
  ASSERT_TRUE(dequantize_row(DType::kQ4_0, q4 + 2, 32, out).ok());  // d = -1 here
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], (j - 8) * -1.0f);
    EXPECT_EQ(out[j + 16], (15 - j - 8) * -1.0f);
  }
}

TEST(Dequantize, HandBuiltQ4_K) {
  uint8_t b[144] = {};
  put_f16(b, 0.25f);     // d
  put_f16(b + 2, 0.5f);  // dmin
  uint8_t* sc = b + 4;
  // Sub-blocks 0..3: scale in sc[j] & 63, min in sc[j+4] & 63. Sub-blocks 4..7: low 4 bits in
  // sc[j+4] (scale low / min high nibble), top 2 bits in the top bits of sc[j-4] / sc[j].
  const int scale[8] = {1, 2, 3, 63, 17, 33, 49, 60};
  const int min[8] = {5, 6, 7, 8, 20, 36, 52, 63};
  for (int j = 0; j < 4; ++j) {
    sc[j] = static_cast<uint8_t>(scale[j] | ((scale[j + 4] >> 4) << 6));
    sc[j + 4] = static_cast<uint8_t>(min[j] | ((min[j + 4] >> 4) << 6));
    sc[j + 8] = static_cast<uint8_t>((scale[j + 4] & 0xF) | ((min[j + 4] & 0xF) << 4));
  }
  for (int i = 0; i < 128; ++i) b[16 + i] = static_cast<uint8_t>((i * 5 + 1) & 0xFF);
  float out[256];
  ASSERT_TRUE(dequantize_row(DType::kQ4_K, b, 256, out).ok());
  // Element e: 64-element group g = e / 64 uses bytes qs[32g .. 32g+31]; the first 32 take the
  // low nibbles with sub-block 2g, the next 32 the high nibbles with sub-block 2g+1.
  for (int e = 0; e < 256; ++e) {
    const int g = e / 64, l = e % 32, hi = (e % 64) / 32, s = 2 * g + hi;
    const uint8_t byte = b[16 + 32 * g + l];
    const int q = hi ? byte >> 4 : byte & 0xF;
    const float want = (0.25f * scale[s]) * q - (0.5f * min[s]);
    ASSERT_EQ(out[e], want) << e;
  }
}

TEST(Dequantize, HandBuiltQ6_K) {
  uint8_t b[210];
  for (int i = 0; i < 192; ++i) b[i] = static_cast<uint8_t>((i * 37 + 11) & 0xFF);  // ql, qh
  for (int i = 0; i < 16; ++i) b[192 + i] = static_cast<uint8_t>(static_cast<int8_t>(i * 9 - 70));
  put_f16(b + 208, 0.125f);
  float out[256];
  ASSERT_TRUE(dequantize_row(DType::kQ6_K, b, 256, out).ok());
  // Element e: half h = e / 128, quarter r = (e % 128) / 32, l = e % 32. Low 4 bits: ql[64h + l
  // (+32 for r odd)], low nibble for r < 2 else high; high 2 bits: qh[32h + l] >> 2r; scale
  // index 8h + 2r + l / 16.
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, r = (e % 128) / 32, l = e % 32;
    const uint8_t qlb = b[64 * h + l + (r % 2) * 32];
    const int lo = r < 2 ? qlb & 0xF : qlb >> 4;
    const int hi2 = (b[128 + 32 * h + l] >> (2 * r)) & 3;
    const int q = (lo | (hi2 << 4)) - 32;
    const int8_t s = static_cast<int8_t>(b[192 + 8 * h + 2 * r + l / 16]);
    const float want = 0.125f * s * q;
    ASSERT_EQ(out[e], want) << e;
  }
}

TEST(Dequantize, RejectsPartialBlocksAndScalarTypes) {
  uint8_t b[34] = {};
  float out[32];
  EXPECT_THAT(std::string(dequantize_row(DType::kQ8_0, b, 31, out).message()),
              ::testing::HasSubstr("not a multiple of the q8_0 block size 32"));
  EXPECT_FALSE(dequantize_row(DType::kF32, b, 1, out).ok());
}

// blocks.gguf holds random blocks of all five types; blocks.expected.f32 is gguf-py's
// dequantization of them (written by scripts/make_fixture.py). Bit-exact.
TEST(Dequantize, RandomBlocksMatchGgufPy) {
  const char* fx = std::getenv("KILN_FIXTURES");
  ASSERT_NE(fx, nullptr) << "KILN_FIXTURES not set (run through ctest)";
  auto g = GgufFile::open(std::string(fx) + "/quant/blocks.gguf");
  ASSERT_TRUE(g.ok()) << g.status();
  std::ifstream in(std::string(fx) + "/quant/blocks.expected.f32", std::ios::binary);
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t pos = 0;
  ASSERT_EQ((*g)->tensors().size(), 5u);
  for (const GgufTensorInfo& t : (*g)->tensors()) {
    const int64_t n = t.shape[0] * t.shape[1];
    std::vector<float> got(n), want(n);
    ASSERT_LE(pos + n * 4, raw.size());
    std::memcpy(want.data(), raw.data() + pos, n * 4);
    pos += n * 4;
    ASSERT_TRUE(dequantize_row(t.dtype, (*g)->tensor_bytes(t).data(), n, got.data()).ok());
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(bits(got[i]), bits(want[i])) << t.name << " element " << i;
    }
  }
  EXPECT_EQ(pos, raw.size());
}
// ---- fp8e4m3 (OCP FP8 E4M3 "fn", as the fp8e4m3 KV cache stores it) ---------------------------

// Values whose codes the OCP spec fixes: zeros, the extremes, the binade edges, ties (to even)
// between normals, between subnormals, and between the largest subnormal and the smallest
// normal, saturation (satfinite, as PTX cvt.rn.satfinite.e4m3x2.f32), NaN.
TEST(Fp8E4M3, TableOfValues) {
  const std::pair<float, uint8_t> table[] =
      {
          {0.0f, 0x00},          {-0.0f, 0x80},    {1.0f, 0x38},
          {-1.0f, 0xb8},         {1.125f, 0x39},   {1.0625f, 0x38},  // tie -> even (1.0)
          {1.1875f, 0x3a},                                           // tie -> even (1.25)
          {2.0f, 0x40},          {0.3f, 0x2a},     {240.0f, 0x77},
          {256.0f, 0x78},        {448.0f, 0x7e},   {-448.0f, 0xfe},
          {449.0f, 0x7e},        {464.0f, 0x7e},   {1e9f, 0x7e},  // satfinite
          {-1e9f, 0xfe},         {INFINITY, 0x7e}, {-INFINITY, 0xfe},
          {0.015625f, 0x08},      // 2^-6: the smallest normal
          {0.001953125f, 0x01},   // 2^-9: the smallest subnormal
          {0.0009765625f, 0x00},  // 2^-10: tie 0 / 2^-9 -> even (0)
          {0.0029296875f, 0x02},  // 1.5 * 2^-9: tie -> even (2)
          {0.013671875f, 0x07},   // 7 * 2^-9: the largest subnormal
          {0.0146484375f, 0x08},  // 7.5 * 2^-9: tie -> even (smallest normal)
          {-0.0001f, 0x80},       // underflows to -0
      };
  for (auto [x, code] : table) {
    EXPECT_EQ(f32_to_fp8e4m3(x), code) << x;
  }
  EXPECT_EQ(f32_to_fp8e4m3(NAN), 0x7f);
  EXPECT_TRUE(std::isnan(fp8e4m3_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(fp8e4m3_to_f32(0xff)));
  EXPECT_EQ(fp8e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(fp8e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(fp8e4m3_to_f32(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_EQ(fp8e4m3_to_f32(0x39), 1.125f);
  EXPECT_TRUE(std::signbit(fp8e4m3_to_f32(0x80)));
}

// Decoding: every finite code round-trips through the encoder and the finite values increase
// with the code.
TEST(Fp8E4M3, EveryCodeRoundTrips) {
  float previous = -1;
  for (int c = 0; c < 0x7f; ++c) {
    const float v = fp8e4m3_to_f32(static_cast<uint8_t>(c));
    EXPECT_GT(v, previous) << c;
    previous = v;
    EXPECT_EQ(f32_to_fp8e4m3(v), c) << v;
    EXPECT_EQ(f32_to_fp8e4m3(-v), c | 0x80) << -v;
    EXPECT_EQ(fp8e4m3_to_f32(static_cast<uint8_t>(c | 0x80)), -v);
  }
}

// The encoder against a brute-force oracle that knows nothing of exponents and mantissas: the
// nearest of the 127 finite codes of x's sign, ties to the even code, |x| > 448 to ±448. Over
// every midpoint between neighbouring codes and the floats one ulp either side of it, and random
// floats over the whole range (subnormals and beyond 448 included).
TEST(Fp8E4M3, EncoderIsRoundToNearestEvenSaturating) {
  std::vector<float> values(0x7f);
  for (int c = 0; c < 0x7f; ++c) values[c] = fp8e4m3_to_f32(static_cast<uint8_t>(c));
  auto oracle = [&](float x) -> uint8_t {
    const uint8_t sign = std::signbit(x) ? 0x80 : 0;
    const double a = std::fabs(static_cast<double>(x));
    if (a >= 448) return sign | 0x7e;
    int best = 0;
    for (int c = 1; c < 0x7f; ++c) {
      const double d = std::fabs(values[c] - a), db = std::fabs(values[best] - a);
      if (d < db || (d == db && c % 2 == 0)) best = c;
    }
    return sign | static_cast<uint8_t>(best);
  };
  std::vector<float> probes;
  for (int c = 0; c + 1 < 0x7f; ++c) {
    const float mid = (values[c] + values[c + 1]) / 2;  // exact: a few bits past the codes'
    for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f), values[c]}) {
      probes.push_back(x);
      probes.push_back(-x);
    }
  }
  uint32_t state = 12345;
  for (int i = 0; i < 200000; ++i) {
    state = state * 1664525u + 1013904223u;
    // Magnitudes from 2^-14 to 2^10: subnormals, every binade, and past 448.
    const float x =
        std::ldexp(1.0f + (state >> 8) / 16777216.0f, static_cast<int>(state % 25) - 14);
    probes.push_back((state & 1) ? -x : x);
  }
  int bad = 0;
  for (float x : probes) {
    const uint8_t want = oracle(x), got = f32_to_fp8e4m3(x);
    if (got != want && bad++ < 10) {
      ADD_FAILURE() << x << ": got 0x" << std::hex << int{got} << ", want 0x" << int{want};
    }
  }
  EXPECT_EQ(bad, 0);
}

}  // namespace
}  // namespace kiln
