// Paged causal prefill attention, FlashAttention-2 class for sm_80+ (the fallback on sm_90a):
// the same rows, grid and result as flash_attention_prefill.cuh, made fast by
//  * a cp.async pipeline of STAGES K/V tile buffers in dynamic shared memory: tile j+STAGES-1 is
//    in flight (gathered row by row from its pages, page size a runtime value) while tile j is
//    computed, with one __syncthreads per tile;
//  * ldmatrix fragment loads (ldmatrix.trans for V) from padded rows (stride D + 8 elements: the
//    8 rows one 8x8 matrix touches start 4 banks apart, so every ldmatrix is conflict-free);
//  * causal work bounds: a warp skips tiles wholly past its rows' largest position, and masks
//    only tiles that cross its rows' smallest position or the sequence end (the diagonal);
//  * exp2 of log2(e)-prescaled scores (ex2.approx), P kept in registers as the A operand of P·V;
//  * the output staged through the (then idle) Q tile and written in 16-byte stores.
// Rows are (token, query head of one KV group) pairs, token-major, so each K/V tile is loaded once
// for the G heads of a group (GQA packing). A warp owns 16 rows; TILE_Q = 16 * WARPS.
//
// Shared memory (dynamic; the launch rule passes prefill_pipelined_smem_bytes(), and the kernel
// traps when given less): Q [TILE_Q][D+8], then STAGES x (K [TILE_KV][D+8], V [TILE_KV][D+8]).
// With an fp8e4m3 cache (C = fp8e4m3) the stages hold codes and scales instead (K, V codes
// [TILE_KV][D] bytes, K, V scales [TILE_KV] f32: half the bytes in flight), and one 16-bit K and V
// tile after them receives each landed stage dequantized (fp8.cuh), one extra barrier per tile.
#pragma once

#include "attention_common.cuh"

namespace kiln_k {

/// Bytes of one pipeline stage: a K and a V tile of T, or their fp8e4m3 codes and scales.
template <class T, class C, int D, int TILE_KV>
__host__ __device__ constexpr int prefill_pipelined_stage_bytes() {
  return sizeof(C) == 1 ? 2 * TILE_KV * D + 2 * TILE_KV * 4
                        : 2 * TILE_KV * TileStride<D>::value * (int)sizeof(T);
}

/// Dynamic shared bytes of flash_attention_prefill_pipelined (codegen computes the same sum).
template <class T, class C, int D, int TILE_Q, int TILE_KV, int STAGES>
__host__ __device__ constexpr int prefill_pipelined_smem_bytes() {
  return TILE_Q * TileStride<D>::value * (int)sizeof(T) +
         STAGES * prefill_pipelined_stage_bytes<T, C, D, TILE_KV>() +
         (sizeof(C) == 1 ? 2 * TILE_KV * TileStride<D>::value * (int)sizeof(T) : 0);
}

/// Four 8x8 b16 matrices from shared memory; lane l gives the address of row l % 8 of matrix
/// l / 8 and receives, in r[i], the elements (l / 4, 2 * (l % 4) + {0,1}) of matrix i.
__device__ __forceinline__ void ldmatrix_x4(u32 (&r)[4], const void* smem) {
  const u32 a = static_cast<u32>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
/// The same, transposed: r[i] holds elements (2 * (l % 4) + {0,1}, l / 4) of matrix i.
__device__ __forceinline__ void ldmatrix_x4_trans(u32 (&r)[4], const void* smem) {
  const u32 a = static_cast<u32>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

/// 16 bytes moved as one vector (NVRTC is given no headers, so no uint4).
struct __align__(16) Vec16 {
  u32 x, y, z, w;
};

/// Waits until at most N of this thread's committed cp.async groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

/// 2^x on the SFU; 2^-inf = +0, which is how masked scores vanish.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/// One KV tile against a warp's 16 rows: S = Q·Kᵀ, online softmax, O += P·V. MASK applies the
/// causal and KV-length mask (the diagonal and last tiles only); without it every column is valid
/// for every row the warp writes.
template <class T, int D, int TILE_KV, bool MASK>
__device__ __forceinline__ void pipelined_attend_tile(const u32 (&qf)[D / 16][4], const T* k,
                                                      const T* v, int kv_base, int kv_len,
                                                      const int (&pos)[2], float scale_log2,
                                                      WarpAttnState<D>& st) {
  constexpr int kS = TileStride<D>::value;
  const int lane = threadIdx.x % 32;
  const int c = 2 * (lane % 4);

  // S = Q·Kᵀ. One ldmatrix.x4 gives the B fragments of two 8-column n tiles for one k step:
  // matrices (n rows +0..7, d +0..7), (+0..7, +8..15), (+8..15, +0..7), (+8..15, +8..15).
  float s[TILE_KV / 8][4];
#pragma unroll
  for (int nt = 0; nt < TILE_KV / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
  const T* kl = k + ((lane % 8) + 8 * (lane / 16)) * kS + 8 * ((lane / 8) % 2);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
    for (int np = 0; np < TILE_KV / 16; ++np) {
      u32 b[4];
      ldmatrix_x4(b, kl + np * 16 * kS + kk * 16);
      mma_16816<T>(s[2 * np], qf[kk], b[0], b[1]);
      mma_16816<T>(s[2 * np + 1], qf[kk], b[2], b[3]);
    }
  }

  float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
  for (int nt = 0; nt < TILE_KV / 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = e / 2;
      float x = s[nt][e] * scale_log2;
      if (MASK) {
        const int j = kv_base + nt * 8 + c + (e % 2);
        if (!(j < kv_len && j <= pos[row])) x = neg_inf();
      }
      s[nt][e] = x;
      mx[row] = fmaxf(mx[row], x);
    }
  }
  float rescale[2];
#pragma unroll
  for (int row = 0; row < 2; ++row) {
    mx[row] = fmaxf(mx[row], __shfl_xor_sync(0xffffffffu, mx[row], 1));
    mx[row] = fmaxf(mx[row], __shfl_xor_sync(0xffffffffu, mx[row], 2));
    const float m_new = fmaxf(st.m[row], mx[row]);
    // A row with nothing unmasked yet keeps m = -inf; subtract 0 instead so exp2 gives 0, not NaN.
    const float m_use = m_new == neg_inf() ? 0.f : m_new;
    rescale[row] = fast_exp2(st.m[row] - m_use);
    st.m[row] = m_new;
    float sum = 0.f;
#pragma unroll
    for (int nt = 0; nt < TILE_KV / 8; ++nt) {
      s[nt][2 * row] = fast_exp2(s[nt][2 * row] - m_use);
      s[nt][2 * row + 1] = fast_exp2(s[nt][2 * row + 1] - m_use);
      sum += s[nt][2 * row] + s[nt][2 * row + 1];
    }
    st.l[row] = st.l[row] * rescale[row] + sum;
  }
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) {
    st.o[dt][0] *= rescale[0];
    st.o[dt][1] *= rescale[0];
    st.o[dt][2] *= rescale[1];
    st.o[dt][3] *= rescale[1];
  }

  // O += P·V. P's accumulator layout is the A layout of one 16-wide k step (FlashAttention-2).
  // One ldmatrix.x4.trans gives the B fragments of two 8-column d tiles for 16 KV rows:
  // matrices (kv +0..7, d +0..7), (kv +8..15, d +0..7), (kv +0..7, d +8..15), (+8..15, +8..15).
  const T* vl = v + ((lane % 8) + 8 * ((lane / 8) % 2)) * kS + 8 * (lane / 16);
#pragma unroll
  for (int kt = 0; kt < TILE_KV / 16; ++kt) {
    u32 pa[4];
    pa[0] = pack2<T>(s[2 * kt][0], s[2 * kt][1]);
    pa[1] = pack2<T>(s[2 * kt][2], s[2 * kt][3]);
    pa[2] = pack2<T>(s[2 * kt + 1][0], s[2 * kt + 1][1]);
    pa[3] = pack2<T>(s[2 * kt + 1][2], s[2 * kt + 1][3]);
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      u32 b[4];
      ldmatrix_x4_trans(b, vl + kt * 16 * kS + dp * 16);
      mma_16816<T>(st.o[2 * dp], pa, b[0], b[1]);
      mma_16816<T>(st.o[2 * dp + 1], pa, b[2], b[3]);
    }
  }
}

/// out[T, Hq, D] = softmax(scale · q·kᵀ + causal mask) · v over each token's sequence in the
/// paged cache (which already holds this step's K/V rows). Same entry and grid as
/// flash_attention_prefill: grid.x >= ceil(T * G / TILE_Q) + S blocks (surplus ones exit),
/// grid.y = KV heads. The cache holds C: T, or fp8e4m3 codes with scales k_scales / v_scales.
template <class T, class C, int D, int G, int TILE_Q, int TILE_KV, int WARPS, int STAGES>
__device__ __forceinline__ void flash_attention_prefill_pipelined(
    T* __restrict__ out, const T* __restrict__ q, const C* __restrict__ k_cache,
    const C* __restrict__ v_cache, const float* __restrict__ k_scales,
    const float* __restrict__ v_scales, const int* __restrict__ positions,
    const int* __restrict__ qo_indptr, const int* __restrict__ kv_page_indptr,
    const int* __restrict__ kv_page_indices, const int* __restrict__ kv_last_page_len, int num_seqs,
    int num_kv_heads, int page_size, float scale) {
  static_assert(TILE_Q == 16 * WARPS, "a warp owns 16 query rows");
  static_assert(TILE_KV % 16 == 0 && D % 16 == 0, "ldmatrix.x4 covers 16 rows and 16 columns");
  static_assert(STAGES >= 2, "the pipeline needs a tile in flight beside the one computed");
  constexpr int kThreads = 32 * WARPS;
  constexpr int kS = TileStride<D>::value;
  constexpr int kChunks = D * (int)sizeof(T) / 16;  // 16-byte pieces per row
  constexpr int kVec = 16 / (int)sizeof(T);
  constexpr bool kFp8 = sizeof(C) == 1;
  static_assert(kFp8 || sizeof(C) == sizeof(T), "the cache holds T or fp8e4m3 codes");
  constexpr int kStageBytes = prefill_pipelined_stage_bytes<T, C, D, TILE_KV>();
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* const q_s = reinterpret_cast<T*>(smem_raw);
  T* const kv_s = q_s + TILE_Q * kS;  // stage i: K at kv_s + 2*i*TILE_KV*kS, V right after
  // fp8e4m3: stage i's codes and scales at stage8 + i * kStageBytes (K codes, V codes, K scales,
  // V scales), then the dequantized K and V tiles.
  unsigned char* const stage8 = reinterpret_cast<unsigned char*>(kv_s);
  T* const k_deq = reinterpret_cast<T*>(stage8 + STAGES * kStageBytes);
  T* const v_deq = k_deq + TILE_KV * kS;
  __shared__ int tile_max_pos;

  {
    u32 dyn;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dyn));
    if (dyn < (u32)prefill_pipelined_smem_bytes<T, C, D, TILE_Q, TILE_KV, STAGES>()) __trap();
  }

  const int kv_head = blockIdx.y;
  const int num_q_heads = num_kv_heads * G;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  // Which sequence and which of its query tiles this block owns (O(S) scan). Within a sequence the
  // last (longest: causal) tiles go to the lowest block numbers, so they start first.
  int seq = -1, tile = blockIdx.x;
  for (int s = 0; s < num_seqs; ++s) {
    const int tiles = ((qo_indptr[s + 1] - qo_indptr[s]) * G + TILE_Q - 1) / TILE_Q;
    if (tile < tiles) {
      seq = s;
      tile = tiles - 1 - tile;
      break;
    }
    tile -= tiles;
  }
  if (seq < 0) return;
  const int q_begin = qo_indptr[seq], q_rows = (qo_indptr[seq + 1] - q_begin) * G;
  const int page_begin = kv_page_indptr[seq];
  const int num_pages = kv_page_indptr[seq + 1] - page_begin;
  const int kv_len = num_pages == 0 ? 0 : (num_pages - 1) * page_size + kv_last_page_len[seq];
  const int row0 = tile * TILE_Q;

  // Q tile (rows past the sequence's last token read as zeros) and the tile's largest position.
  if (tid == 0) tile_max_pos = -1;
  __syncthreads();
  if (tid < TILE_Q && row0 + tid < q_rows) {
    atomicMax(&tile_max_pos, positions[q_begin + (row0 + tid) / G]);
  }
  for (int i = tid; i < TILE_Q * kChunks; i += kThreads) {
    const int row = i / kChunks, chunk = i % kChunks;
    const int qr = row0 + row;
    const bool valid = qr < q_rows;
    const T* src = q;
    if (valid) src = q + ((long long)(q_begin + qr / G) * num_q_heads + kv_head * G + qr % G) * D;
    cp_async_16(q_s + row * kS + chunk * kVec,
                reinterpret_cast<const char*>(src) + (valid ? chunk * 16 : 0), valid);
  }
  cp_async_commit();
  __syncthreads();
  // Causality bounds the KV loop: nothing past the tile's largest position is ever visible.
  const int kv_end = min(kv_len, tile_max_pos + 1);
  const int num_tiles = (kv_end + TILE_KV - 1) / TILE_KV;

  auto load_stage = [&](int t) {
    if constexpr (kFp8) {
      unsigned char* st = stage8 + (t % STAGES) * kStageBytes;
      float* scales = reinterpret_cast<float*>(st + 2 * TILE_KV * D);
      load_kv_codes<D, TILE_KV, kThreads>(st, scales, k_cache, k_scales, kv_page_indices,
                                          page_begin, page_size, num_kv_heads, kv_head, t * TILE_KV,
                                          kv_len, tid);
      load_kv_codes<D, TILE_KV, kThreads>(st + TILE_KV * D, scales + TILE_KV, v_cache, v_scales,
                                          kv_page_indices, page_begin, page_size, num_kv_heads,
                                          kv_head, t * TILE_KV, kv_len, tid);
    } else {
      T* k_dst = kv_s + 2 * (t % STAGES) * TILE_KV * kS;
      load_kv_tile<T, D, TILE_KV, kThreads>(k_dst, k_cache, kv_page_indices, page_begin, page_size,
                                            num_kv_heads, kv_head, t * TILE_KV, kv_len, tid);
      load_kv_tile<T, D, TILE_KV, kThreads>(k_dst + TILE_KV * kS, v_cache, kv_page_indices,
                                            page_begin, page_size, num_kv_heads, kv_head,
                                            t * TILE_KV, kv_len, tid);
    }
  };
  // Prologue: tiles 0 .. STAGES-2 in flight, one commit group each (empty groups past the end
  // keep the group count, and so the waits below, uniform).
#pragma unroll
  for (int t = 0; t < STAGES - 1; ++t) {
    if (t < num_tiles) load_stage(t);
    cp_async_commit();
  }

  // Q fragments (the Q group is the oldest; STAGES-1 newer groups may still be in flight).
  cp_async_wait<STAGES - 1>();
  __syncthreads();
  u32 qf[D / 16][4];
  {
    const T* ql = q_s + (warp * 16 + lane % 16) * kS + 8 * (lane / 16);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) ldmatrix_x4(qf[kk], ql + kk * 16);
  }
  // This lane's two rows' positions (-1: a padding row, fully masked) and the warp's bounds.
  int pos[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int qr = row0 + warp * 16 + lane / 4 + 8 * h;
    pos[h] = qr < q_rows ? positions[q_begin + qr / G] : -1;
  }
  int warp_max = max(pos[0], pos[1]);
  int warp_min = min(pos[0] < 0 ? 0x7fffffff : pos[0], pos[1] < 0 ? 0x7fffffff : pos[1]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    warp_max = max(warp_max, __shfl_xor_sync(0xffffffffu, warp_max, o));
    warp_min = min(warp_min, __shfl_xor_sync(0xffffffffu, warp_min, o));
  }

  WarpAttnState<D> st;
  st.init();
  const float scale_log2 = scale * 1.4426950408889634f;
  for (int t = 0; t < num_tiles; ++t) {
    // Tile t has landed (STAGES-2 newer groups may still fly); after the barrier every warp is
    // also done with tile t-1, whose buffer the next load reuses.
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    if (t + STAGES - 1 < num_tiles) load_stage(t + STAGES - 1);
    cp_async_commit();
    const T* k_t = kv_s + 2 * (t % STAGES) * TILE_KV * kS;
    const T* v_t = k_t + TILE_KV * kS;
    if constexpr (kFp8) {
      // Every warp is done with the previous tile's dequantized K/V (the barrier above): fill
      // them with this one's, then a barrier before any warp reads them.
      const unsigned char* st = stage8 + (t % STAGES) * kStageBytes;
      const float* scales = reinterpret_cast<const float*>(st + 2 * TILE_KV * D);
      dequantize_tile<T, D, TILE_KV, kThreads>(k_deq, st, scales, tid);
      dequantize_tile<T, D, TILE_KV, kThreads>(v_deq, st + TILE_KV * D, scales + TILE_KV, tid);
      __syncthreads();
      k_t = k_deq;
      v_t = v_deq;
    }
    const int kv_base = t * TILE_KV;
    if (kv_base > warp_max) continue;  // wholly in the future of every row of this warp
    if (kv_base + TILE_KV - 1 > warp_min || kv_base + TILE_KV > kv_len) {
      pipelined_attend_tile<T, D, TILE_KV, true>(qf, k_t, v_t, kv_base, kv_len, pos, scale_log2,
                                                 st);
    } else {
      pipelined_attend_tile<T, D, TILE_KV, false>(qf, k_t, v_t, kv_base, kv_len, pos, scale_log2,
                                                  st);
    }
  }
  cp_async_wait<0>();
  finish_row_sums<D>(st);

  // out[token, head, :] = o / l (zeros for a row that saw no key), staged through this warp's own
  // 16 rows of the Q tile (only this warp ever read them) for 16-byte row-contiguous stores.
  T* const o_s = q_s + warp * 16 * kS;
  const int r = lane / 4, c = 2 * (lane % 4);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float inv_l = st.l[h] > 0.f ? 1.f / st.l[h] : 0.f;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      *reinterpret_cast<u32*>(o_s + (r + 8 * h) * kS + dt * 8 + c) =
          pack2<T>(st.o[dt][2 * h] * inv_l, st.o[dt][2 * h + 1] * inv_l);
    }
  }
  __syncwarp();
#pragma unroll
  for (int i = lane; i < 16 * kChunks; i += 32) {
    const int row = i / kChunks, chunk = i % kChunks;
    const int qr = row0 + warp * 16 + row;
    if (qr >= q_rows) continue;
    T* dst = out + ((long long)(q_begin + qr / G) * num_q_heads + kv_head * G + qr % G) * D;
    *reinterpret_cast<Vec16*>(dst + chunk * kVec) =
        *reinterpret_cast<const Vec16*>(o_s + row * kS + chunk * kVec);
  }
}

}  // namespace kiln_k
