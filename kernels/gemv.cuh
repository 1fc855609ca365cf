// Small-batch GEMM ("GEMV"): out[m, N] = a[m, K]·w[N, K]ᵀ (+ bias[N]) (+ residual[m, N]) for
// m <= 16 token rows, in one pass over the weights. At decode batch sizes the step is bound by
// the weight bytes, so the kernel's job is to stream w exactly once with many 16-byte loads in
// flight per SM; the m token rows ride along through tensor-core mma (m16n8k16, fp32
// accumulate), so batch 16 issues the same weight loads as batch 1 and the arithmetic never
// becomes the limit (on CUDA cores 16 rows would need ~60 TFLOP/s of fp32 FMA at 3.6 TB/s).
//
// Work split: a block owns ROW_TILES tiles of 16 output features; its WARPS warps split K
// (interleaved 32-element chunks), each accumulating a 16-feature x 16-token tile per row tile in
// mma fragments; the warps' partial tiles are summed through shared memory and the epilogue
// (bias, residual, rounding) runs once per output element.
//
// SwiGLU epilogue (SWIGLU): w is fuse-horizontal's merged [gate; up] weight of 2F rows and the
// kernel writes silu(gate)·up [m, F] instead of the [m, 2F] product. A block's first ROW_TILES/2
// tiles are gate rows j0.. and the rest the up rows F + j0.. of the same features, so both halves
// of an output element meet in the block's shared-memory sum; each half is rounded to OUT first,
// exactly as the unfused GEMM's result is before the elementwise kernel reads it, so the fused
// path gives the unfused path's bits.
//
// RMSNorm prologue (NORM): `a` is the norm's input x and the kernel multiplies
// y = x · rsqrt(mean(x²) + eps) · norm_w, the normed rows it would otherwise read from an rmsnorm
// launch. Each block first sums the squares of its m rows (a warp per row, read through L1, which
// the main loop then hits again) while the first weight loads are already in flight; the main
// loop scales each activation fragment in registers, rounding as the rmsnorm kernel does
// ((x · inv_rms) · w in fp32, once to T).
//
// Fragment trick: a lane (group g = lane / 4, t = lane % 4) loads 16 bytes (8 elements) of weight
// rows g and g + 8 and of activation row (token) g at the same K offset t*8 of each 32-element
// chunk. The mma's K order inside a chunk is only a labelling, so the same permutation applied to
// A (weights) and B (activations) makes those raw 16-byte loads exactly the fragments of two
// m16n8k16 steps (elements 0-3 and 4-7): no shuffles, no shared-memory staging of the weights.
#pragma once

#include "common.cuh"

namespace kiln_k {

/// 16 bytes: 8 bf16/f16 elements, as four packed pairs (the mma operand registers).
struct alignas(16) Pack16 {
  u32 x, y, z, w;
};

/// A 16-byte load of data read once: non-coherent path, no L1 allocation (weights stream past
/// the L1 that the activations, read by every block, want to stay in). Deliberately not
/// `volatile`: with it ptxas interleaved each chunk's loads with its mma (one chunk in flight per
/// warp, seen in the SASS); without it every load of the UNROLL chunks issues first. The weights
/// are read-only for the kernel's lifetime, as the .nc path requires.
__device__ __forceinline__ Pack16 load_stream(const Pack16* p) {
  Pack16 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

/// Asks L2 for the weight rows that block task_block().x of gemv<T, .., N, K, ROW_TILES, ..,
/// SWIGLU> streams (a prefetch.global.L2 per 128-byte line, spread over the block's threads). The
/// persistent decode kernel issues it before the task waits for its inputs, so the weight stream
/// keeps going while the op before finishes (the role a kernel boundary's gap otherwise plays).
template <class T, int N, int K, int ROW_TILES, bool SWIGLU>
__device__ __forceinline__ void gemv_prefetch_l2(const T* w) {
  constexpr int kRows = 16 * ROW_TILES;
  auto rows = [&](long long first, long long count) {
    const char* p = reinterpret_cast<const char*>(w + first * K);
    const long long bytes = count * K * (long long)sizeof(T);
    for (long long off = threadIdx.x * 128LL; off < bytes; off += blockDim.x * 128LL) {
      asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off));
    }
  };
  const long long x = task_block().x;
  if (SWIGLU) {  // gate rows f0.. and the up rows F apart
    const long long f0 = x * (kRows / 2), count = min((long long)kRows / 2, N / 2 - f0);
    if (count > 0) rows(f0, count), rows(N / 2 + f0, count);
  } else {
    const long long n0 = x * kRows, count = min((long long)kRows, N - n0);
    if (count > 0) rows(n0, count);
  }
}

/// T: a and w element type (bf16/f16); OUT: output (and residual) type; BIAS: bias type.
/// N, K: the weight shape (K % 8 == 0; rows need 16-byte alignment). `m` in [1, 16] at run time
/// (rows past 8 cost a second mma per step, rows past m are never read or written).
/// `residual` may alias `out` (in-place residual add: each element is read before it is written,
/// by the same thread). SWIGLU: N = 2F, out is [m, F], no bias or residual, ROW_TILES even.
/// PREFETCH: two register sets of UNROLL chunks, one loading while the other is multiplied.
/// NORM: `a` is RMSNorm's input, normalized with norm_w[K] and eps on the fly.
template <class T, class OUT, class BIAS, int N, int K, int ROW_TILES, int WARPS, int UNROLL,
          bool HAS_BIAS, bool HAS_RESIDUAL, bool SWIGLU = false, bool PREFETCH = false,
          bool NORM = false>
__device__ __forceinline__ void gemv(OUT* out, const T* __restrict__ a, const T* __restrict__ w,
                                     const BIAS* __restrict__ bias, const OUT* residual, int m,
                                     const T* __restrict__ norm_w = nullptr, float eps = 0.f) {
  static_assert(K % 8 == 0, "16-byte rows");
  static_assert(!SWIGLU || (ROW_TILES % 2 == 0 && N % 2 == 0 && !HAS_BIAS && !HAS_RESIDUAL),
                "the SwiGLU epilogue pairs gate and up tiles, with no other epilogue");
  constexpr int kRows = 16 * ROW_TILES;        // weight rows per block
  constexpr int kChunks = (K + 31) / 32;       // 32-element K chunks
  constexpr int kF = N / 2;                    // SWIGLU: output features
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int n0 = task_block().x * (SWIGLU ? kRows / 2 : kRows);  // first output feature
  const bool two = m > 8;  // warp-uniform: a second 8-token mma column tile

  float acc[ROW_TILES][2][4];
#pragma unroll
  for (int r = 0; r < ROW_TILES; ++r)
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[r][j][e] = 0.f;

  // Row pointers (clamped to a valid row: loads of rows past N are masked to zero below).
  const Pack16* wrow[ROW_TILES][2];
  bool wvalid[ROW_TILES][2];
#pragma unroll
  for (int r = 0; r < ROW_TILES; ++r)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      // SWIGLU: tiles [0, ROW_TILES/2) are gate rows, the rest the up rows F apart.
      const int f = n0 + (SWIGLU ? r % (ROW_TILES / 2) : r) * 16 + g + 8 * h;
      const int n = SWIGLU && r >= ROW_TILES / 2 ? kF + f : f;
      wvalid[r][h] = SWIGLU ? f < kF : n < N;
      wrow[r][h] = reinterpret_cast<const Pack16*>(w + (long long)(wvalid[r][h] ? n : 0) * K);
    }
  const bool avalid0 = g < m, avalid1 = g + 8 < m;
  const Pack16* arow0 = reinterpret_cast<const Pack16*>(a + (long long)(avalid0 ? g : 0) * K);
  const Pack16* arow1 = reinterpret_cast<const Pack16*>(a + (long long)(avalid1 ? g + 8 : 0) * K);
  const Pack16 zero = {0, 0, 0, 0};

  // The loads of UNROLL chunks (chunk c0 + u·WARPS of this warp), masked to zero past K / N / m;
  // with NORM also the norm weights of the same K offsets (gv).
  auto load = [&](int c0, Pack16 (&wv)[UNROLL][ROW_TILES][2], Pack16 (&av)[UNROLL][2],
                  Pack16 (&gv)[UNROLL]) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int c = c0 + u * WARPS;
      const int v = c * 4 + t;  // 16-byte vector index inside a row
      const bool kv = c < kChunks && v * 8 < K;
#pragma unroll
      for (int r = 0; r < ROW_TILES; ++r)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          wv[u][r][h] = (kv && wvalid[r][h]) ? load_stream(wrow[r][h] + v) : zero;
        }
      av[u][0] = (kv && avalid0) ? arow0[v] : zero;
      av[u][1] = (kv && avalid1 && two) ? arow1[v] : zero;
      if (NORM) gv[u] = kv ? reinterpret_cast<const Pack16*>(norm_w)[v] : zero;
    }
  };
  // NORM: inv_rms of token rows g and g + 8, from the prologue.
  __shared__ float inv_rms[16];
  float inv0 = 0.f, inv1 = 0.f;
  auto prologue = [&]() {
    if constexpr (NORM) {
      // A warp per token row (two rows per warp at most): fp32 sum of squares, 16-byte loads.
      for (int row = warp; row < m; row += WARPS) {
        const Pack16* xr = reinterpret_cast<const Pack16*>(a + (long long)row * K);
        float ss = 0.f;
        for (int v = lane; v < K / 8; v += 32) {
          const Pack16 p = xr[v];
          const u32 words[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            const float lo = to_float(T{static_cast<u16>(words[q] & 0xffffu)});
            const float hi = to_float(T{static_cast<u16>(words[q] >> 16)});
            ss += lo * lo + hi * hi;
          }
        }
        ss = warp_sum(ss);
        if (lane == 0) inv_rms[row] = rsqrtf(ss / K + eps);
      }
      block_sync<WARPS * 32>();
      inv0 = avalid0 ? inv_rms[g] : 0.f;
      inv1 = avalid1 ? inv_rms[g + 8] : 0.f;
    }
  };
  // NORM: y = (x · inv) · norm_w of the 8 elements of one activation load, rounded to T.
  auto normalize = [&](Pack16& x, const Pack16& nw, float inv) {
    if constexpr (NORM) {
      u32* xw = &x.x;
      const u32* ww = &nw.x;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float lo = to_float(T{static_cast<u16>(xw[q] & 0xffffu)}) * inv *
                         to_float(T{static_cast<u16>(ww[q] & 0xffffu)});
        const float hi = to_float(T{static_cast<u16>(xw[q] >> 16)}) * inv *
                         to_float(T{static_cast<u16>(ww[q] >> 16)});
        xw[q] = pack2<T>(lo, hi);
      }
    }
  };
  // The mma of loaded chunks, in ascending chunk order (every block shape and PREFETCH sums a
  // warp's chunks in the same order, so they agree to the bit).
  auto compute = [&](const Pack16 (&wv)[UNROLL][ROW_TILES][2], Pack16 (&av)[UNROLL][2],
                     const Pack16 (&gv)[UNROLL]) {
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      normalize(av[u][0], gv[u], inv0);
      if (two) normalize(av[u][1], gv[u], inv1);
#pragma unroll
      for (int s = 0; s < 2; ++s) {  // elements 0-3, then 4-7 of each lane's 8
        const u32 b0 = s ? av[u][0].z : av[u][0].x, b1 = s ? av[u][0].w : av[u][0].y;
        const u32 c0b = s ? av[u][1].z : av[u][1].x, c1b = s ? av[u][1].w : av[u][1].y;
#pragma unroll
        for (int r = 0; r < ROW_TILES; ++r) {
          const Pack16& lo = wv[u][r][0];
          const Pack16& hi = wv[u][r][1];
          const u32 frag[4] = {s ? lo.z : lo.x, s ? hi.z : hi.x, s ? lo.w : lo.y,
                               s ? hi.w : hi.y};
          mma_16816<T>(acc[r][0], frag, b0, b1);
          if (two) mma_16816<T>(acc[r][1], frag, c0b, c1b);
        }
      }
    }
  };
  constexpr int kStep = WARPS * UNROLL;  // chunks per pass of the block
  // The first pass's loads are issued before the prologue (the weights do not depend on it).
  if constexpr (!PREFETCH) {
    // Issue every load of UNROLL chunks before the first mma: the bytes in flight per SM are
    // what hides HBM latency.
    Pack16 wv[UNROLL][ROW_TILES][2], av[UNROLL][2], gv[UNROLL];
    load(warp, wv, av, gv);
    prologue();
    for (int c0 = warp; c0 < kChunks; c0 += kStep) {
      if (c0 != warp) load(c0, wv, av, gv);
      compute(wv, av, gv);
    }
  } else {
    // Two register sets: the next pass's loads are issued before this pass's mma, so a warp
    // never waits with nothing in flight (the loop above drains between passes).
    Pack16 wa[UNROLL][ROW_TILES][2], aa[UNROLL][2], ga[UNROLL];
    Pack16 wb[UNROLL][ROW_TILES][2], ab[UNROLL][2], gb[UNROLL];
    load(warp, wa, aa, ga);
    prologue();
    for (int c0 = warp; c0 < kChunks; c0 += 2 * kStep) {
      load(c0 + kStep, wb, ab, gb);  // all masked to zero past the end
      compute(wa, aa, ga);
      if (c0 + kStep >= kChunks) break;
      load(c0 + 2 * kStep, wa, aa, ga);
      compute(wb, ab, gb);
    }
  }

  // acc[r][j] holds features (g, g + 8) x tokens (8j + 2t, 8j + 2t + 1) of row tile r. Sum the
  // warps' tiles in shared memory: part[warp][feature][token] (rows padded to 17 floats, so the
  // epilogue's feature-major reads do not all hit two banks).
#ifdef KILN_PERSISTENT
  // Inside the persistent kernel the buffer is dynamic shared memory, which every task reuses
  // (static arrays of all its kinds would add up past the 48 KB a block may declare statically):
  // gemv_partial_bytes() of it (codegen/families/gemv.h).
  extern __shared__ __align__(16) char kiln_gemv_smem[];
  float(&part)[WARPS][kRows][17] = *reinterpret_cast<float(*)[WARPS][kRows][17]>(kiln_gemv_smem);
#else
  __shared__ float part[WARPS][kRows][17];
#endif
#pragma unroll
  for (int r = 0; r < ROW_TILES; ++r)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      part[warp][r * 16 + g][8 * j + 2 * t] = acc[r][j][0];
      part[warp][r * 16 + g][8 * j + 2 * t + 1] = acc[r][j][1];
      part[warp][r * 16 + g + 8][8 * j + 2 * t] = acc[r][j][2];
      part[warp][r * 16 + g + 8][8 * j + 2 * t + 1] = acc[r][j][3];
    }
  block_sync<WARPS * 32>();
  if constexpr (SWIGLU) {
    constexpr int kOut = kRows / 2;
    for (int i = threadIdx.x; i < kOut * 16; i += WARPS * 32) {
      const int f = i % kOut, tok = i / kOut;
      const int n = n0 + f;
      if (tok >= m || n >= kF) continue;
      float gate = 0.f, up = 0.f;
#pragma unroll
      for (int q = 0; q < WARPS; ++q) {
        gate += part[q][f][tok];
        up += part[q][kOut + f][tok];
      }
      // The unfused path: the GEMM rounds both halves to OUT; the elementwise kernel computes
      // silu(x) = x / (1 + e^-x) on them in fp32 and rounds the product once.
      const float x = to_float(from_float<OUT>(gate)), u = to_float(from_float<OUT>(up));
      out[(long long)tok * kF + n] = from_float<OUT>(x / (1.f + expf(-x)) * u);
    }
    return;
  }
  // One thread per (token, feature), features fastest: coalesced output rows.
  for (int i = threadIdx.x; i < kRows * 16; i += WARPS * 32) {
    const int f = i % kRows, tok = i / kRows;
    const int n = n0 + f;
    if (tok >= m || n >= N) continue;
    float v = 0.f;
#pragma unroll
    for (int q = 0; q < WARPS; ++q) v += part[q][f][tok];
    // Bias and residual join the fp32 sum before the one rounding, as cuBLASLt's epilogue
    // (alpha·acc + bias, + beta·C) does.
    if (HAS_BIAS) v += to_float(bias[n]);
    const long long o = (long long)tok * N + n;
    if (HAS_RESIDUAL) v += to_float(residual[o]);
    out[o] = from_float<OUT>(v);
  }
}

}  // namespace kiln_k
