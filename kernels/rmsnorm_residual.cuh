// RMSNorm, optionally fused with the residual add before it: one block per row, the row held in
// registers between the add, the sum of squares and the scaling (one read, one or two writes).
#pragma once

#include "common.cuh"

namespace kiln_k {

/// Per row of H elements: sum = x + residual (rounded to T, written to `residual_out`, as the
/// unfused graph stores it), y = sum * rsqrt(mean(sum²) + eps) * w computed in fp32 and rounded
/// once. Without RESIDUAL, sum = x and `residual`/`residual_out` are unused. Each of THREADS
/// threads owns VPT vectors of VEC elements (16-byte accesses when H allows).
template <class T, int H, int VEC, int VPT, int THREADS, bool RESIDUAL>
__device__ __forceinline__ void rmsnorm_residual(T* __restrict__ y, T* __restrict__ residual_out,
                                                 const T* __restrict__ x,
                                                 const T* __restrict__ residual,
                                                 const T* __restrict__ w, float eps) {
  static_assert(H % VEC == 0, "rows are whole vectors");
  constexpr int kVecs = H / VEC;
  static_assert(VPT * THREADS >= kVecs, "the block covers a row");
  __shared__ float scratch[THREADS / 32];
  const long long row = blockIdx.x;
  struct alignas(VEC * sizeof(T))
      Vec {  // exactly VEC elements: the row is read as an array of them
    T v[VEC];
  };
  const Vec* xr = reinterpret_cast<const Vec*>(x + row * H);
  float vals[VPT][VEC];
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int vi = threadIdx.x + i * THREADS;
    if (vi >= kVecs) continue;
    Vec a = xr[vi];
    Vec b;
    if (RESIDUAL) b = reinterpret_cast<const Vec*>(residual + row * H)[vi];
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      float s = to_float(a.v[e]);
      if (RESIDUAL) {
        a.v[e] = from_float<T>(s + to_float(b.v[e]));
        s = to_float(a.v[e]);
      }
      vals[i][e] = s;
      ss += s * s;
    }
    if (RESIDUAL) reinterpret_cast<Vec*>(residual_out + row * H)[vi] = a;
  }
  const float inv_rms = rsqrtf(block_sum<THREADS>(ss, scratch) / H + eps);
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int vi = threadIdx.x + i * THREADS;
    if (vi >= kVecs) continue;
    const Vec wv = reinterpret_cast<const Vec*>(w)[vi];
    Vec o;
#pragma unroll
    for (int e = 0; e < VEC; ++e) o.v[e] = from_float<T>(vals[i][e] * inv_rms * to_float(wv.v[e]));
    reinterpret_cast<Vec*>(y + row * H)[vi] = o;
  }
}

}  // namespace kiln_k
