// RMSNorm, optionally fused with the residual add before it: THREADS threads per row, ROWS rows
// per block (a warp per row for narrow rows, a whole block for wide ones), the row held in
// registers between the add, the sum of squares and the scaling: one read of x (and residual),
// one or two writes, no second pass over global memory.
#pragma once

#include "common.cuh"

namespace kiln_k {

/// Per row of H elements: sum = x + residual (rounded to T, written to `residual_out`, as the
/// unfused graph stores it), y = sum * rsqrt(mean(sum²) + eps) * w computed in fp32 and rounded
/// once. Without RESIDUAL, sum = x and `residual`/`residual_out` are unused. Each of THREADS
/// threads of a row owns VPT vectors of VEC elements (16-byte accesses when H allows); the block
/// covers rows [task_block().x * ROWS, + ROWS) of `num_rows`.
template <class T, int H, int VEC, int VPT, int THREADS, int ROWS, bool RESIDUAL>
__device__ __forceinline__ void rmsnorm_residual(T* __restrict__ y, T* __restrict__ residual_out,
                                                 const T* __restrict__ x,
                                                 const T* __restrict__ residual,
                                                 const T* __restrict__ w, float eps, int num_rows) {
  static_assert(H % VEC == 0, "rows are whole vectors");
  static_assert(THREADS % 32 == 0, "a row is whole warps");
  constexpr int kVecs = H / VEC;
  constexpr int kWarps = THREADS / 32;
  static_assert(VPT * THREADS >= kVecs, "the threads of a row cover it");
  __shared__ float scratch[ROWS][kWarps];
  const int sub = threadIdx.x / THREADS, t = threadIdx.x % THREADS;
  const long long row = (long long)task_block().x * ROWS + sub;
  const bool live = row < num_rows;
  struct alignas(VEC * sizeof(T))
      Vec {  // exactly VEC elements: the row is read as an array of them
    T v[VEC];
  };
  const Vec* xr = reinterpret_cast<const Vec*>(x + row * H);
  const Vec* rr = reinterpret_cast<const Vec*>(residual + row * H);
  // Every load of the row is issued before any arithmetic (bytes in flight are what a memory-bound
  // kernel has); the weights are fetched now too so they arrive during the reduction.
  Vec a[VPT], b[VPT], wv[VPT];
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int vi = t + i * THREADS;
    if (!live || vi >= kVecs) continue;
    a[i] = xr[vi];
    if (RESIDUAL) b[i] = rr[vi];
  }
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int vi = t + i * THREADS;
    if (live && vi < kVecs) wv[i] = reinterpret_cast<const Vec*>(w)[vi];
  }
  float vals[VPT][VEC];
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int vi = t + i * THREADS;
    if (!live || vi >= kVecs) continue;
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      float s = to_float(a[i].v[e]);
      if (RESIDUAL) {
        a[i].v[e] = from_float<T>(s + to_float(b[i].v[e]));
        s = to_float(a[i].v[e]);
      }
      vals[i][e] = s;
      ss += s * s;
    }
    if (RESIDUAL) reinterpret_cast<Vec*>(residual_out + row * H)[vi] = a[i];
  }
  ss = warp_sum(ss);
  if (kWarps > 1) {
    if (t % 32 == 0) scratch[sub][t / 32] = ss;
    block_sync<THREADS * ROWS>();
    ss = 0.f;
#pragma unroll
    for (int k = 0; k < kWarps; ++k) ss += scratch[sub][k];
  }
  if (!live) return;
  const float inv_rms = rsqrtf(ss / H + eps);
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int vi = t + i * THREADS;
    if (vi >= kVecs) continue;
    Vec o;
#pragma unroll
    for (int e = 0; e < VEC; ++e) o.v[e] = from_float<T>(vals[i][e] * inv_rms * to_float(wv[i].v[e]));
    reinterpret_cast<Vec*>(y + row * H)[vi] = o;
  }
}

}  // namespace kiln_k
