// Paged causal attention for prefill and mixed steps: tiles of query rows against the paged KV
// cache with tensor-core mma.sync and online softmax (FlashAttention-2), GQA-aware.
//
// A block owns TILE_Q query rows of ONE KV head, where a row is a (token, query head) pair of that
// KV head's group, token-major: row i is token i / G, head kv_head * G + i % G. Every K/V tile is
// then loaded once for all G heads of the group (FlashInfer's GQA packing). Blocks are numbered
// over the step's sequences: sequence s has ceil(q_len_s * G / TILE_Q) tiles; the launch rule sizes
// the grid by the bound ceil(T * G / TILE_Q) + S and surplus blocks exit at once.
#pragma once

#include "attention_common.cuh"

namespace kiln_k {

/// out[T, Hq, D] = softmax(scale · q·kᵀ + causal mask) · v over each token's sequence in the
/// paged cache (which already holds this step's K/V rows: kv_append runs first). The cache holds
/// C: T, or fp8e4m3 codes with scales k_scales / v_scales [NP * PS, Hkv] (null for a T cache),
/// dequantized into the shared tiles as they are loaded.
/// Requires TILE_Q == 16 * WARPS (a warp owns 16 rows), TILE_KV % 16 == 0, D % 16 == 0.
template <class T, class C, int D, int G, int TILE_Q, int TILE_KV, int WARPS>
__device__ __forceinline__ void flash_attention_prefill(
    T* __restrict__ out, const T* __restrict__ q, const C* __restrict__ k_cache,
    const C* __restrict__ v_cache, const float* __restrict__ k_scales,
    const float* __restrict__ v_scales, const int* __restrict__ positions,
    const int* __restrict__ qo_indptr, const int* __restrict__ kv_page_indptr,
    const int* __restrict__ kv_page_indices, const int* __restrict__ kv_last_page_len, int num_seqs,
    int num_kv_heads, int page_size, float scale) {
  static_assert(TILE_Q == 16 * WARPS, "a warp owns 16 query rows");
  static_assert(TILE_KV % 16 == 0 && D % 16 == 0, "mma tiles are 16 wide");
  constexpr int kThreads = 32 * WARPS;
  constexpr int kS = TileStride<D>::value;
  // K and V tiles; the Q tile is staged in the K buffer before the loop (Q lives in registers
  // afterwards), so shared memory is 2 * TILE_KV rows, which stays under the 48 KB static limit.
  static_assert(TILE_Q <= TILE_KV, "the Q tile is staged in the K tile buffer");
  __shared__ __align__(16) T k_tile[TILE_KV * kS];
  __shared__ __align__(16) T v_tile[TILE_KV * kS];
  __shared__ int tile_max_pos;

  const int kv_head = blockIdx.y;
  const int num_q_heads = num_kv_heads * G;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  // Which sequence and which of its query tiles this block owns (O(S) scan; S is small).
  int seq = -1, tile = blockIdx.x;
  for (int s = 0; s < num_seqs; ++s) {
    const int tiles = ((qo_indptr[s + 1] - qo_indptr[s]) * G + TILE_Q - 1) / TILE_Q;
    if (tile < tiles) {
      seq = s;
      break;
    }
    tile -= tiles;
  }
  if (seq < 0) return;
  const int q_begin = qo_indptr[seq], q_rows = (qo_indptr[seq + 1] - q_begin) * G;
  const int page_begin = kv_page_indptr[seq];
  const int num_pages = kv_page_indptr[seq + 1] - page_begin;
  const int kv_len = num_pages == 0 ? 0 : (num_pages - 1) * page_size + kv_last_page_len[seq];

  // Stage the Q tile: rows past the sequence's last token are zero and fully masked.
  if (tid == 0) tile_max_pos = -1;
  __syncthreads();
  constexpr int kChunks = D * (int)sizeof(T) / 16;
  for (int i = tid; i < TILE_Q * kChunks; i += kThreads) {
    const int row = i / kChunks, chunk = i % kChunks;
    const int qr = tile * TILE_Q + row;
    const bool valid = qr < q_rows;
    const T* src = q;
    if (valid) {
      const int token = q_begin + qr / G, head = kv_head * G + qr % G;
      src = q + ((long long)token * num_q_heads + head) * D;
      if (chunk == 0) atomicMax(&tile_max_pos, positions[token]);
    }
    cp_async_16(k_tile + row * kS + chunk * (16 / (int)sizeof(T)),
                reinterpret_cast<const char*>(src) + (valid ? chunk * 16 : 0), valid);
  }
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  u32 qf[D / 16][4];
  load_q_fragments<T, D>(k_tile + warp * 16 * kS, qf);
  int pos[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int qr = tile * TILE_Q + warp * 16 + lane / 4 + 8 * h;
    pos[h] = qr < q_rows ? positions[q_begin + qr / G] : -1;
  }
  // Causality bounds the KV loop: nothing past the tile's largest position is ever visible.
  const int kv_end = min(kv_len, tile_max_pos + 1);
  __syncthreads();

  WarpAttnState<D> st;
  st.init();
  const float scale_log2 = scale * 1.4426950408889634f;
  for (int kv_base = 0; kv_base < kv_end; kv_base += TILE_KV) {
    // One stage for clarity; a cp.async double buffer (or TMA on sm_90a) is the next tuning step.
    if constexpr (sizeof(C) == 1) {  // fp8e4m3 codes: dequantized on the way into the tiles
      load_kv_tile_fp8<T, D, TILE_KV, kThreads>(k_tile, k_cache, k_scales, kv_page_indices,
                                                page_begin, page_size, num_kv_heads, kv_head,
                                                kv_base, kv_len, tid);
      load_kv_tile_fp8<T, D, TILE_KV, kThreads>(v_tile, v_cache, v_scales, kv_page_indices,
                                                page_begin, page_size, num_kv_heads, kv_head,
                                                kv_base, kv_len, tid);
    } else {
      load_kv_tile<T, D, TILE_KV, kThreads>(k_tile, k_cache, kv_page_indices, page_begin, page_size,
                                            num_kv_heads, kv_head, kv_base, kv_len, tid);
      load_kv_tile<T, D, TILE_KV, kThreads>(v_tile, v_cache, kv_page_indices, page_begin, page_size,
                                            num_kv_heads, kv_head, kv_base, kv_len, tid);
      cp_async_commit();
      cp_async_wait_all();
    }
    __syncthreads();
    warp_attend_tile<T, D, TILE_KV>(qf, k_tile, v_tile, kv_base, kv_end, pos, scale_log2, st);
    __syncthreads();
  }
  finish_row_sums<D>(st);

  // out[token, head, :] = o / l; a row that saw no key (empty cache) writes zeros.
  const int c = 2 * (lane % 4);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int qr = tile * TILE_Q + warp * 16 + lane / 4 + 8 * h;
    if (qr >= q_rows) continue;
    const int token = q_begin + qr / G, head = kv_head * G + qr % G;
    T* dst = out + ((long long)token * num_q_heads + head) * D;
    const float inv_l = st.l[h] > 0.f ? 1.f / st.l[h] : 0.f;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      dst[dt * 8 + c] = from_float<T>(st.o[dt][2 * h] * inv_l);
      dst[dt * 8 + c + 1] = from_float<T>(st.o[dt][2 * h + 1] * inv_l);
    }
  }
}

}  // namespace kiln_k
