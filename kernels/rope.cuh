// Rotary position embedding (rotate-half and interleaved pair layouts, any rotary_dim <= D) and
// the paged-KV append that stores this step's K/V rows at their slots before attention reads them
// (copied as they are, or quantized into an fp8e4m3 cache with per-row scales: fp8.cuh).
//
// The frequencies come from the generated config as `kiln_rope_inv_freq[ROT / 2]` in constant
// memory: codegen computes them once on the host from the op's attributes (theta, llama3 scaling)
// with the same formula the CPU reference uses, so both backends rotate by identical angles.
#pragma once

#include "common.cuh"
#include "fp8.cuh"

namespace kiln_k {

/// out[t, h, :] = rope(x[t, h, :], positions[t]); grid-stride over T x H x D/2 element pairs.
/// HALF: pairs (i, i + ROT/2) (HF rotate_half); otherwise pairs (2i, 2i + 1) (GPT-J / llama.cpp).
/// Dims from ROT on are copied unchanged (partial rotary). XS: elements between x's token rows
/// when x is a view (a slice of a merged QKV result); 0: contiguous. out is contiguous.
template <class T, int D, int ROT, bool HALF, long long XS>
__device__ __forceinline__ void rope(T* __restrict__ out, const T* __restrict__ x,
                                     const int* __restrict__ positions,
                                     const float* __restrict__ inv_freq, int num_tokens,
                                     int num_heads) {
  static_assert(ROT % 2 == 0 && ROT <= D && D % 2 == 0, "rotary pairs");
  const long long pairs = (long long)num_tokens * num_heads * (D / 2);
  for (long long i = task_block().x * (long long)blockDim.x + threadIdx.x; i < pairs;
       i += (long long)task_grid().x * blockDim.x) {
    const int p = i % (D / 2);
    const long long row = i / (D / 2);  // t * H + h
    const int t = row / num_heads;
    const T* xr = XS != 0 ? x + t * XS + (row - (long long)t * num_heads) * D : x + row * D;
    T* orow = out + row * D;
    if (p >= ROT / 2) {  // pass-through dims, two per pair index
      const int e = ROT + 2 * (p - ROT / 2);
      orow[e] = xr[e];
      orow[e + 1] = xr[e + 1];
      continue;
    }
    const int a = HALF ? p : 2 * p, b = HALF ? p + ROT / 2 : 2 * p + 1;
    // fp32 angle as HF computes it (position * inv_freq in float), then accurate sincos: the
    // fast __sinf loses accuracy at the large angles of long contexts.
    float sn, cs;
    sincosf((float)positions[t] * inv_freq[p], &sn, &cs);
    const float xa = to_float(xr[a]), xb = to_float(xr[b]);
    orow[a] = from_float<T>(xa * cs - xb * sn);
    orow[b] = from_float<T>(xb * cs + xa * sn);
  }
}

/// cache[slot_mapping[t], h, :] = rows[t, h, :] for the K or V rows of this step; the cache is
/// [NP * page_size, Hkv, D] viewed flat by slot (slot = page * page_size + offset). A negative
/// slot marks a padding token and is skipped. 16-byte copies, grid-stride. KS, VS: elements
/// between the token rows of k and v when they are views; 0: contiguous.
template <class T, int D, long long KS, long long VS>
__device__ __forceinline__ void kv_append(T* __restrict__ k_cache, T* __restrict__ v_cache,
                                          const T* __restrict__ k, const T* __restrict__ v,
                                          const int* __restrict__ slot_mapping, int num_tokens,
                                          int num_kv_heads) {
  constexpr int kChunks = D * (int)sizeof(T) / 16;
  struct alignas(16) Chunk {
    u32 w[4];
  };
  const long long n = (long long)num_tokens * num_kv_heads * kChunks;
  for (long long i = task_block().x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)task_grid().x * blockDim.x) {
    const long long row = i / kChunks;  // t * Hkv + h
    const int c = i % kChunks, t = row / num_kv_heads, h = row % num_kv_heads;
    const int slot = slot_mapping[t];
    if (slot < 0) continue;
    const long long dst = ((long long)slot * num_kv_heads + h) * kChunks + c;
    const long long in_row = (long long)h * D + (long long)c * (16 / (int)sizeof(T));
    const T* kr = KS != 0 ? k + t * KS + in_row : k + row * D + (long long)c * (16 / (int)sizeof(T));
    const T* vr = VS != 0 ? v + t * VS + in_row : v + row * D + (long long)c * (16 / (int)sizeof(T));
    reinterpret_cast<Chunk*>(k_cache)[dst] = *reinterpret_cast<const Chunk*>(kr);
    reinterpret_cast<Chunk*>(v_cache)[dst] = *reinterpret_cast<const Chunk*>(vr);
  }
}

/// kv_append into an fp8e4m3 cache: one warp per (token, KV head) row of K and of V, grid-stride
/// over warps. A row's values (lane l takes pairs l, l + 32, ...) are quantized together
/// (fp8.cuh: scale = amax / 448 over the row) into codes at cache[slot, h, :] and the scale at
/// scales[slot, h], the slot's own place in the scale array beside the pages.
template <class T, int D, long long KS, long long VS>
__device__ __forceinline__ void kv_append_fp8(
    fp8e4m3* __restrict__ k_cache, fp8e4m3* __restrict__ v_cache, float* __restrict__ k_scales,
    float* __restrict__ v_scales, const T* __restrict__ k, const T* __restrict__ v,
    const int* __restrict__ slot_mapping, int num_tokens, int num_kv_heads) {
  static_assert(D % 2 == 0, "pairs");
  constexpr int kPairs = (D / 2 + 31) / 32;  // per lane
  const int lane = threadIdx.x % 32, warps_per_block = blockDim.x / 32;
  const long long rows = 2LL * num_tokens * num_kv_heads;  // (token, head) x {K, V}
  for (long long r = task_block().x * (long long)warps_per_block + threadIdx.x / 32; r < rows;
       r += (long long)task_grid().x * warps_per_block) {
    const bool is_v = r & 1;
    const long long th = r >> 1;  // t * Hkv + h
    const int t = th / num_kv_heads, h = th % num_kv_heads;
    const int slot = slot_mapping[t];
    if (slot < 0) continue;  // padding token (the whole warp skips)
    const long long stride = is_v ? VS : KS;
    const T* src = (is_v ? v : k) + (stride != 0 ? t * stride + (long long)h * D : th * D);
    float x[2 * kPairs];
#pragma unroll
    for (int i = 0; i < kPairs; ++i) {
      const int p = lane + 32 * i;
      const bool in = p < D / 2;
      x[2 * i] = in ? to_float(src[2 * p]) : 0.f;
      x[2 * i + 1] = in ? to_float(src[2 * p + 1]) : 0.f;
    }
    u32 codes[2 * kPairs];
    const float scale = quantize_warp_row(x, codes);
    const long long row = (long long)slot * num_kv_heads + h;
    unsigned char* dst = reinterpret_cast<unsigned char*>(is_v ? v_cache : k_cache) + row * D;
#pragma unroll
    for (int i = 0; i < kPairs; ++i) {
      const int p = lane + 32 * i;
      if (p < D / 2) {
        *reinterpret_cast<unsigned short*>(dst + 2 * p) =
            static_cast<unsigned short>(codes[2 * i] | (codes[2 * i + 1] << 8));
      }
    }
    if (lane == 0) (is_v ? v_scales : k_scales)[row] = scale;
  }
}

/// One pair of a head row rotated (as rope above): its two element indices `a`, `b` in the row
/// and their values rounded to T. `p` indexes the D/2 pairs; pairs from ROT/2 on are pass-through.
template <class T, int D, int ROT, bool HALF>
__device__ __forceinline__ void rope_pair_values(const T* __restrict__ xr, int p, int position,
                                                 const float* __restrict__ inv_freq, int& a, int& b,
                                                 T& ya, T& yb) {
  if (p >= ROT / 2) {
    a = ROT + 2 * (p - ROT / 2);
    b = a + 1;
    ya = xr[a];
    yb = xr[b];
  } else {
    a = HALF ? p : 2 * p;
    b = HALF ? p + ROT / 2 : 2 * p + 1;
    float sn, cs;
    sincosf((float)position * inv_freq[p], &sn, &cs);
    const float xa = to_float(xr[a]), xb = to_float(xr[b]);
    ya = from_float<T>(xa * cs - xb * sn);
    yb = from_float<T>(xb * cs + xa * sn);
  }
}

/// Rotate one pair of a head row (as rope above) from `xr` into `orow` (and, when `crow` is set,
/// into the cache row too). `p` indexes the D/2 pairs; pairs from ROT/2 on copy pass-through dims.
template <class T, int D, int ROT, bool HALF>
__device__ __forceinline__ void rope_pair(const T* __restrict__ xr, T* __restrict__ orow,
                                          T* __restrict__ crow, int p, int position,
                                          const float* __restrict__ inv_freq) {
  int a, b;
  T ya, yb;
  rope_pair_values<T, D, ROT, HALF>(xr, p, position, inv_freq, a, b, ya, yb);
  orow[a] = ya;
  orow[b] = yb;
  if (crow != nullptr) {
    crow[a] = ya;
    crow[b] = yb;
  }
}

/// The step's q/k rotation and KV append in one pass, after a merged QKV GEMM: q_out = rope(q),
/// k_out = rope(k), and cache[slot_mapping[t]] = (rope(k), v) for every token (a negative slot is
/// padding: no cache write). q, k and v are usually strided rows of that GEMM's result (QS, KS,
/// VS elements between token rows; 0: contiguous); q_out and k_out are contiguous. One thread
/// per element pair of every (token, q head | k head | v head), grid-stride; the angles are
/// rope's, so both write bit-identical values to the separate kernels.
template <class T, int D, int ROT, bool HALF, long long QS, long long KS, long long VS>
__device__ __forceinline__ void rope_kv_append(
    T* __restrict__ q_out, T* __restrict__ k_out, T* __restrict__ k_cache, T* __restrict__ v_cache,
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const int* __restrict__ positions, const int* __restrict__ slot_mapping,
    const float* __restrict__ inv_freq, int num_tokens, int num_q_heads, int num_kv_heads) {
  static_assert(ROT % 2 == 0 && ROT <= D && D % 2 == 0, "rotary pairs");
  const int heads = num_q_heads + 2 * num_kv_heads;
  const long long pairs = (long long)num_tokens * heads * (D / 2);
  for (long long i = task_block().x * (long long)blockDim.x + threadIdx.x; i < pairs;
       i += (long long)task_grid().x * blockDim.x) {
    const int p = i % (D / 2);
    const long long row = i / (D / 2);
    const int t = row / heads, h = row % heads;
    const int slot = slot_mapping[t];
    if (h < num_q_heads) {
      const T* xr = q + (QS != 0 ? t * QS : (long long)t * num_q_heads * D) + (long long)h * D;
      rope_pair<T, D, ROT, HALF>(xr, q_out + ((long long)t * num_q_heads + h) * D, nullptr, p,
                                 positions[t], inv_freq);
    } else if (h < num_q_heads + num_kv_heads) {
      const int hk = h - num_q_heads;
      const T* xr = k + (KS != 0 ? t * KS : (long long)t * num_kv_heads * D) + (long long)hk * D;
      T* crow = slot < 0 ? nullptr : k_cache + ((long long)slot * num_kv_heads + hk) * D;
      rope_pair<T, D, ROT, HALF>(xr, k_out + ((long long)t * num_kv_heads + hk) * D, crow, p,
                                 positions[t], inv_freq);
    } else if (slot >= 0) {
      const int hv = h - num_q_heads - num_kv_heads;
      const T* vr = v + (VS != 0 ? t * VS : (long long)t * num_kv_heads * D) + (long long)hv * D;
      T* crow = v_cache + ((long long)slot * num_kv_heads + hv) * D;
      crow[2 * p] = vr[2 * p];
      crow[2 * p + 1] = vr[2 * p + 1];
    }
  }
}

/// rope_kv_append into an fp8e4m3 cache: the same results as rope_kv_append (q_out, k_out
/// bit-identical), but one warp per (token, q | k | v head) row, grid-stride over warps, since a
/// K or V row is quantized as a whole (fp8.cuh): its rotated values, rounded to T as k_out holds
/// them, give the codes at cache[slot, h, :] and the scale at scales[slot, h].
template <class T, int D, int ROT, bool HALF, long long QS, long long KS, long long VS>
__device__ __forceinline__ void rope_kv_append_fp8(
    T* __restrict__ q_out, T* __restrict__ k_out, fp8e4m3* __restrict__ k_cache,
    fp8e4m3* __restrict__ v_cache, float* __restrict__ k_scales, float* __restrict__ v_scales,
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const int* __restrict__ positions, const int* __restrict__ slot_mapping,
    const float* __restrict__ inv_freq, int num_tokens, int num_q_heads, int num_kv_heads) {
  static_assert(ROT % 2 == 0 && ROT <= D && D % 2 == 0, "rotary pairs");
  constexpr int kPairs = (D / 2 + 31) / 32;  // per lane
  const int lane = threadIdx.x % 32, warps_per_block = blockDim.x / 32;
  const int heads = num_q_heads + 2 * num_kv_heads;
  const long long rows = (long long)num_tokens * heads;
  for (long long r = task_block().x * (long long)warps_per_block + threadIdx.x / 32; r < rows;
       r += (long long)task_grid().x * warps_per_block) {
    const int t = r / heads, h = r % heads;
    const int slot = slot_mapping[t];
    if (h < num_q_heads) {
      const T* xr = q + (QS != 0 ? t * QS : (long long)t * num_q_heads * D) + (long long)h * D;
      T* orow = q_out + ((long long)t * num_q_heads + h) * D;
#pragma unroll
      for (int i = 0; i < kPairs; ++i) {
        const int p = lane + 32 * i;
        if (p < D / 2) rope_pair<T, D, ROT, HALF>(xr, orow, nullptr, p, positions[t], inv_freq);
      }
      continue;
    }
    const bool is_v = h >= num_q_heads + num_kv_heads;
    const int hk = is_v ? h - num_q_heads - num_kv_heads : h - num_q_heads;
    if (is_v && slot < 0) continue;  // padding: a V row has nothing but its cache write
    float x[2 * kPairs];
    int at[2 * kPairs];  // each value's element index in the row
#pragma unroll
    for (int i = 0; i < kPairs; ++i) {
      const int p = lane + 32 * i;
      x[2 * i] = x[2 * i + 1] = 0.f;
      at[2 * i] = at[2 * i + 1] = -1;
      if (p >= D / 2) continue;
      if (is_v) {
        const T* vr = v + (VS != 0 ? t * VS : (long long)t * num_kv_heads * D) + (long long)hk * D;
        at[2 * i] = 2 * p;
        at[2 * i + 1] = 2 * p + 1;
        x[2 * i] = to_float(vr[2 * p]);
        x[2 * i + 1] = to_float(vr[2 * p + 1]);
      } else {
        const T* xr = k + (KS != 0 ? t * KS : (long long)t * num_kv_heads * D) + (long long)hk * D;
        int a, b;  // scalars (references into at[] would put it in local memory)
        T ya, yb;
        rope_pair_values<T, D, ROT, HALF>(xr, p, positions[t], inv_freq, a, b, ya, yb);
        at[2 * i] = a;
        at[2 * i + 1] = b;
        T* orow = k_out + ((long long)t * num_kv_heads + hk) * D;
        orow[a] = ya;
        orow[b] = yb;
        x[2 * i] = to_float(ya);
        x[2 * i + 1] = to_float(yb);
      }
    }
    if (slot < 0) continue;  // a padding token's k rope is written, its cache row is not
    u32 codes[2 * kPairs];
    const float scale = quantize_warp_row(x, codes);
    const long long row = (long long)slot * num_kv_heads + hk;
    unsigned char* dst = reinterpret_cast<unsigned char*>(is_v ? v_cache : k_cache) + row * D;
#pragma unroll
    for (int i = 0; i < 2 * kPairs; ++i) {
      if (at[i] >= 0) dst[at[i]] = static_cast<unsigned char>(codes[i]);
    }
    if (lane == 0) (is_v ? v_scales : k_scales)[row] = scale;
  }
}

}  // namespace kiln_k
