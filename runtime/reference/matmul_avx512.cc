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
}  // namespace
#define KILN_MATMUL_FN matmul_block
#include "runtime/reference/matmul_kernel.inc"
#define KILN_QMATMUL_FN qmatmul_block
#define KILN_QDEQUANT_FN qdequant_rows
#include "runtime/reference/matmul_quant_kernel.inc"
}  // namespace kiln::matmul_avx512
#endif  // __x86_64__
