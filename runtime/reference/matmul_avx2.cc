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
}  // namespace
#define KILN_MATMUL_FN matmul_block
#include "runtime/reference/matmul_kernel.inc"
}  // namespace kiln::matmul_avx2
#endif  // __x86_64__
