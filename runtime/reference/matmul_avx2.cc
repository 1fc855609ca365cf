// The matmul block kernel compiled for AVX2 + FMA + F16C; see runtime/reference/matmul_kernel.inc.
// Built with -mavx2 -mfma -mf16c (runtime/CMakeLists.txt), called only after a CPUID check.
#if defined(__x86_64__)
#include <immintrin.h>
#include <cstdint>

namespace kiln::matmul_avx2 {
namespace {
using Vec = __m256;
constexpr int64_t kWidth = 8;
constexpr int kMaxRows = 2;  // 2 x 4 accumulators + 4 weight vectors fit the 16 ymm registers
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline Vec vload_bf16(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline Vec vload_f16(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float vsum(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float half_to_f32(uint16_t h) { return _cvtsh_ss(h); }
inline void vstore(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec vset1(float f) { return _mm256_set1_ps(f); }
inline Vec vmul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
// 16 bytes of nibbles -> values 0..7, 8..15 (low nibbles), 16..23, 24..31 (high nibbles).
inline void q4_unpack(const uint8_t* qs, Vec* v) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(b, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
  v[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
  v[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
  v[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
  v[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
}
inline void q8_unpack(const int8_t* qs, Vec* v) {
  for (int j = 0; j < 4; ++j) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + 8 * j));
    v[j] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
  }
}
// Integer block dots on 256-bit vectors (AVX2's maddubs: u8 x s8 pairs -> s16 -> s32 lanes).
using QVec = __m256;
inline QVec qv_zero() { return _mm256_setzero_ps(); }
inline QVec qv_set1(float f) { return _mm256_set1_ps(f); }
inline QVec qv_fma(QVec a, QVec b, QVec c) { return _mm256_fmadd_ps(a, b, c); }
inline QVec qv_add(QVec a, QVec b) { return _mm256_add_ps(a, b); }
inline float qv_sum(QVec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline QVec q4q8_dot(const uint8_t* qs, const int8_t* xq) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m256i q = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), mask),
                                     _mm_and_si128(b, mask));  // values 0..15, then 16..31
  const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
  const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), _mm256_set1_epi16(1));
  return _mm256_cvtepi32_ps(p);
}
inline QVec q8q8_dot(const int8_t* w, const int8_t* xq) {
  const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
  // maddubs takes one unsigned operand: |w| times x with w's sign (|w| <= 128, sums fit s16).
  const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(x, a));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}
}  // namespace
#define KILN_MATMUL_FN matmul_block
#include "runtime/reference/matmul_kernel.inc"
#define KILN_QMATMUL_FN qmatmul_block
#define KILN_QDEQUANT_FN qdequant_rows
#define KILN_Q8MATMUL_FN q8matmul_block
#include "runtime/reference/matmul_quant_kernel.inc"
}  // namespace kiln::matmul_avx2
#endif  // __x86_64__
