// Split-KV decode attention (Flash-Decoding, Dao et al. 2023): one query token per sequence; the
// KV range is cut into `num_splits` chunks processed by separate blocks that write a partial
// output plus its log-sum-exp, and a merge kernel combines the chunks weighted by LSE. Parallelism
// then comes from the KV length, not only from S x Hkv, which is small at decode time.
//
// The G query heads of one KV head form the rows of a 16-row mma tile (padded), so K/V are read
// once per group and the tensor cores do the dot products (FlashInfer's tensor-core GQA decode).
// Inside a block each warp takes its own TILE_KV rows of the chunk; warps merge through shared
// memory at the end.
#pragma once

#include "attention_common.cuh"

namespace kiln_k {

/// Partial attention of split blockIdx.z for sequence blockIdx.x, KV head blockIdx.y.
/// o_partial: f32[num_splits, S, Hq, D] (normalized within the split); lse_partial:
/// f32[num_splits, S, Hq] in log2 units (-inf for an empty split). Requires G <= 16.
template <class T, int D, int G, int TILE_KV, int WARPS>
__device__ __forceinline__ void flash_attention_decode(
    float* __restrict__ o_partial, float* __restrict__ lse_partial, const T* __restrict__ q,
    const T* __restrict__ k_cache, const T* __restrict__ v_cache, const int* __restrict__ positions,
    const int* __restrict__ qo_indptr, const int* __restrict__ kv_page_indptr,
    const int* __restrict__ kv_page_indices, const int* __restrict__ kv_last_page_len, int num_seqs,
    int num_kv_heads, int page_size, float scale) {
  static_assert(G >= 1 && G <= 16, "the query heads of a group fill one 16-row mma tile");
  static_assert(TILE_KV % 16 == 0 && D % 16 == 0, "mma tiles are 16 wide");
  constexpr int kThreads = 32 * WARPS;
  constexpr int kS = TileStride<D>::value;
  constexpr int kTileElems = TILE_KV * kS;
  constexpr int kTileBytes = 2 * WARPS * kTileElems * (int)sizeof(T);  // K and V per warp
  static_assert(kTileBytes >= WARPS * 16 * D * 4, "the warp merge reuses the tile buffers");
  static_assert(16 * kS * (int)sizeof(T) <= kTileBytes, "the Q tile is staged in the tiles");
  __shared__ __align__(16) char smem[kTileBytes];
  __shared__ float m_w[WARPS][16], l_w[WARPS][16];

  const int seq = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z;
  const int num_splits = gridDim.z;
  const int num_q_heads = num_kv_heads * G;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int token = qo_indptr[seq];
  const int page_begin = kv_page_indptr[seq];
  const int num_pages = kv_page_indptr[seq + 1] - page_begin;
  const int kv_len = num_pages == 0 ? 0 : (num_pages - 1) * page_size + kv_last_page_len[seq];
  int chunk = (kv_len + num_splits - 1) / num_splits;
  chunk = (chunk + TILE_KV - 1) / TILE_KV * TILE_KV;
  const int kv_begin = split * chunk, kv_end = min(kv_len, kv_begin + chunk);

  // Q rows: the group's G heads, zero-padded to 16.
  T* q_tile = reinterpret_cast<T*>(smem);
  constexpr int kChunks = D * (int)sizeof(T) / 16;
  for (int i = tid; i < 16 * kChunks; i += kThreads) {
    const int row = i / kChunks, c16 = i % kChunks;
    const bool valid = row < G;
    const T* src = valid ? q + ((long long)token * num_q_heads + kv_head * G + row) * D : q;
    cp_async_16(q_tile + row * kS + c16 * (16 / (int)sizeof(T)),
                reinterpret_cast<const char*>(src) + (valid ? c16 * 16 : 0), valid);
  }
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  u32 qf[D / 16][4];
  load_q_fragments<T, D>(q_tile, qf);
  const int token_pos = positions[token];
  int pos[2];
  pos[0] = lane / 4 < G ? token_pos : -1;
  pos[1] = lane / 4 + 8 < G ? token_pos : -1;
  __syncthreads();

  T* k_tile = reinterpret_cast<T*>(smem) + warp * 2 * kTileElems;
  T* v_tile = k_tile + kTileElems;
  WarpAttnState<D> st;
  st.init();
  const float scale_log2 = scale * 1.4426950408889634f;
  for (int kv_base = kv_begin + warp * TILE_KV; kv_base < kv_end; kv_base += WARPS * TILE_KV) {
    load_kv_tile<T, D, TILE_KV, 32>(k_tile, k_cache, kv_page_indices, page_begin, page_size,
                                    num_kv_heads, kv_head, kv_base, kv_end, lane);
    load_kv_tile<T, D, TILE_KV, 32>(v_tile, v_cache, kv_page_indices, page_begin, page_size,
                                    num_kv_heads, kv_head, kv_base, kv_end, lane);
    cp_async_commit();
    cp_async_wait_all();
    __syncwarp();
    warp_attend_tile<T, D, TILE_KV>(qf, k_tile, v_tile, kv_base, kv_end, pos, scale_log2, st);
    __syncwarp();
  }
  finish_row_sums<D>(st);

  // Merge the warps' states: o_w = [WARPS][16][D] f32 in the (now free) tile buffers.
  __syncthreads();
  float* o_w = reinterpret_cast<float*>(smem);
  const int r = lane / 4, c = 2 * (lane % 4);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float* row = o_w + (warp * 16 + r + 8 * h) * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      row[dt * 8 + c] = st.o[dt][2 * h];
      row[dt * 8 + c + 1] = st.o[dt][2 * h + 1];
    }
    if (lane % 4 == 0) {
      m_w[warp][r + 8 * h] = st.m[h];
      l_w[warp][r + 8 * h] = st.l[h];
    }
  }
  __syncthreads();
  for (int i = tid; i < G * D; i += kThreads) {
    const int row = i / D, d = i % D;
    float m = neg_inf();
#pragma unroll
    for (int w = 0; w < WARPS; ++w) m = fmaxf(m, m_w[w][row]);
    const float m_use = m == neg_inf() ? 0.f : m;
    float l = 0.f, o = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) {
      const float f = exp2f(m_w[w][row] - m_use);
      l += l_w[w][row] * f;
      o += o_w[(w * 16 + row) * D + d] * f;
    }
    const long long slot = ((long long)split * num_seqs + seq) * num_q_heads + kv_head * G + row;
    o_partial[slot * D + d] = l > 0.f ? o / l : 0.f;
    if (d == 0) lse_partial[slot] = l > 0.f ? m + __log2f(l) : neg_inf();
  }
}

/// Combines the splits: out[token, h, :] = Σ_i 2^(lse_i - M) o_i / Σ_i 2^(lse_i - M) with
/// M = max_i lse_i. Grid (S, Hq), D threads (one per head dim).
template <class T, int D>
__device__ __forceinline__ void flash_attention_decode_merge(
    T* __restrict__ out, const float* __restrict__ o_partial, const float* __restrict__ lse_partial,
    const int* __restrict__ qo_indptr, int num_seqs, int num_q_heads, int num_splits) {
  const int seq = blockIdx.x, head = blockIdx.y, d = threadIdx.x;
  float m = neg_inf();
  for (int i = 0; i < num_splits; ++i) {
    m = fmaxf(m, lse_partial[((long long)i * num_seqs + seq) * num_q_heads + head]);
  }
  const float m_use = m == neg_inf() ? 0.f : m;
  float num = 0.f, den = 0.f;
  for (int i = 0; i < num_splits; ++i) {
    const long long slot = ((long long)i * num_seqs + seq) * num_q_heads + head;
    const float w = exp2f(lse_partial[slot] - m_use);
    den += w;
    num += w * o_partial[slot * D + d];
  }
  const int token = qo_indptr[seq];
  out[((long long)token * num_q_heads + head) * D + d] = from_float<T>(den > 0.f ? num / den : 0.f);
}

}  // namespace kiln_k
