// The matmul block kernel compiled for AVX-512 (F, BW) + FMA + F16C; see
// runtime/reference/matmul_kernel.inc. This file is built with -mavx512f etc.
// (runtime/CMakeLists.txt) and called only after a CPUID check, so it must include nothing with
// inline functions beyond <immintrin.h>.
#if defined(__x86_64__)
#include <immintrin.h>
#include <cstdint>

namespace kiln::matmul_avx512 {
namespace {
using Vec = __m512;
constexpr int64_t kWidth = 16;
constexpr int kMaxRows = 4;  // 4 x 4 accumulators + 4 weight vectors fit the 32 zmm registers
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline Vec vload_bf16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline Vec vload_f16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float vsum(Vec v) { return _mm512_reduce_add_ps(v); }
inline float half_to_f32(uint16_t h) { return _cvtsh_ss(h); }
inline void vstore(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec vset1(float f) { return _mm512_set1_ps(f); }
inline Vec vmul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
// 16 bytes of nibbles -> values 0..15 (low nibbles) and 16..31 (high nibbles).
inline void q4_unpack(const uint8_t* qs, Vec* v) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0F);
  v[0] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(b, mask)));
  v[1] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(b, 4), mask)));
}
inline void q8_unpack(const int8_t* qs, Vec* v) {
  for (int j = 0; j < 2; ++j) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + 16 * j));
    v[j] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
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
}  // namespace kiln::matmul_avx512
#endif  // __x86_64__
