// Split-KV decode attention (Flash-Decoding, Dao et al. 2023): one query token per sequence; the
// KV range is cut into `num_splits` chunks processed by separate blocks that write a partial
// output plus its softmax weight; the block that finishes a (sequence, KV head) last combines the
// chunks (a counter in global memory tells it that it is last), so a decode step's attention is
// one launch, with no merge kernel and its launch gap after it. Parallelism then comes from the
// KV length, not only from S x Hkv, which is small at decode time.
//
// The G query heads of one KV head form the rows of a 16-row mma tile (padded), so K/V are read
// once per group and the tensor cores do the dot products (FlashInfer's tensor-core GQA decode).
// Inside a block each warp takes its own TILE_KV rows of the chunk through a STAGES-deep cp.async
// ring (the next tiles' loads are in flight while the current one is computed: a decode step is
// pure bandwidth, so bytes in flight per SM is what matters); warps merge through shared memory.
//
// Softmax variants (SOFTMAX_UNIFIED):
//  - false: FlashAttention-2's online softmax; each split reports its log-sum-exp, the merge
//    rescales every split by 2^(lse_i - max lse).
//  - true: FlashDecoding++'s unified max (Hong et al. 2023). The running max starts at a fixed
//    bound `phi` (log2 domain) shared by every split, so while no score exceeds it the loop never
//    rescales the accumulators and each split's weight is its plain sum l (relative to 2^phi): the
//    merge is a weighted sum with no exponentials. Exact for any input: a score above phi takes
//    the ordinary online-softmax update (the row's max moves past phi), a row whose first tile
//    lies far below phi (where 2^(s - phi) would lose precision) starts from its own max instead,
//    and a split whose max is not phi marks its weight -1 so the merge falls back to the
//    log-sum-exp path for that row.
//
// Cascade (CASCADE = true, kernels/cascade_attention.cuh): the same kernel attends to a sequence's
// suffix only, KV positions [kv_start[seq], kv_len) of its own page list, and its last split merges
// the prefix kernel's partials of the sequence together with its own; a one-split launch then
// writes a partial and merges too. The plain instantiation compiles none of it.
//
// An fp8e4m3 cache (C = fp8e4m3): each warp's ring stages hold the tile's e4m3 codes and per-row
// scales (half the bytes in flight of a bf16 tile); once a stage has landed the warp dequantizes
// it (fp8.cuh) into a 16-bit K and V tile of its own, which the mma path reads as before.
#pragma once

#include "attention_common.cuh"
#include "fp8.cuh"

namespace kiln_k {

/// cp.async.wait_group N: all but the N most recent commit groups have landed.
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

/// ldmatrix.x4 (and .trans) of four 8x8 b16 matrices whose rows lanes 8m..8m+7 address.
__device__ __forceinline__ void decode_ldsm_x4(u32 (&r)[4], const void* row) {
  const u32 a = static_cast<u32>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void decode_ldsm_x2(u32 (&r)[2], const void* row) {
  const u32 a = static_cast<u32>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(a));
}
__device__ __forceinline__ void decode_ldsm_x4_trans(u32 (&r)[4], const void* row) {
  const u32 a = static_cast<u32>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

/// The unified bound's lower margin: a row whose first tile's max is below phi - this many
/// (log2 units) would have P values near the f16 subnormal range, so it uses its own max.
constexpr float kUnifiedLowMargin = 12.f;

/// Dynamic shared memory of the decode kernel: the K/V rings (with an fp8e4m3 cache C, rings of
/// codes and scales, then each warp's dequantized K and V tile), or the warp-merge buffer, which
/// reuses them, never less than the Q staging tile. codegen's FlashAttentionDecodeSpec::
/// shared_bytes() computes the same sum.
template <class T, class C, int D, int TILE_KV, int WARPS, int STAGES>
struct DecodeSmem {
  static constexpr bool kFp8 = sizeof(C) == 1;
  static constexpr int kS = TileStride<D>::value;
  static constexpr int kTileElems = TILE_KV * kS;
  // One stage of one warp: K and V tiles of T, or K codes, V codes [TILE_KV][D], K scales, V
  // scales [TILE_KV].
  static constexpr int kStage =
      kFp8 ? 2 * TILE_KV * D + 2 * TILE_KV * 4 : 2 * kTileElems * (int)sizeof(T);
  static constexpr int kRing = STAGES * WARPS * kStage;
  static constexpr int kDequantized = kFp8 ? WARPS * 2 * kTileElems * (int)sizeof(T) : 0;
  static constexpr int kTiles = kRing + kDequantized;
  static constexpr int kMerge = WARPS * 16 * D * 4;
  static constexpr int kQ = 16 * kS * (int)sizeof(T);
  static constexpr int kBytes = kTiles > kMerge ? (kTiles > kQ ? kTiles : kQ)
                                                : (kMerge > kQ ? kMerge : kQ);
};

/// The decode-only tile step: like warp_attend_tile (attention_common.cuh) but masking only by the
/// split's end (one query per sequence sees its whole KV range), padding rows by `valid`, and, in
/// the unified variant, skipping the accumulator rescale whenever no row of the warp saw a new max.
/// B fragments come from ldmatrix (K as stored, V transposed on the fly): one instruction per
/// four fragments instead of 32-bit (K) and 16-bit (V) scalar loads.
template <class T, int D, int TILE_KV, bool UNIFIED>
__device__ __forceinline__ void decode_attend_tile(const u32 (&qf)[D / 16][4], const T* k,
                                                   const T* v, int kv_base, int kv_end,
                                                   const bool (&valid)[2], float scale_log2,
                                                   float phi, bool& first, WarpAttnState<D>& st) {
  constexpr int kS = TileStride<D>::value;
  const int lane = threadIdx.x % 32;
  const int c = 2 * (lane % 4);
  // Lane l addresses row l % 8 of matrix l / 8.
  const int lr = lane % 8, lm = lane / 8;
  float s[TILE_KV / 8][4];
#pragma unroll
  for (int nt = 0; nt < TILE_KV / 8; ++nt) {
    s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    // Matrices m = 0..3: K rows nt*8.., head dims kk*16 + 8m: b0, b1 of k steps kk and kk + 1.
    const T* krow = k + (nt * 8 + lr) * kS + lm * 8;
#pragma unroll
    for (int kk = 0; kk + 1 < D / 16; kk += 2) {
      u32 b[4];
      decode_ldsm_x4(b, krow + kk * 16);
      mma_16816<T>(s[nt], qf[kk], b[0], b[1]);
      mma_16816<T>(s[nt], qf[kk + 1], b[2], b[3]);
    }
    if constexpr (D % 32 != 0) {  // an odd number of k steps: the last one alone (lanes 0-15)
      u32 b[2];
      decode_ldsm_x2(b, k + (nt * 8 + lr) * kS + (lm % 2) * 8 + (D - 16));
      mma_16816<T>(s[nt], qf[D / 16 - 1], b[0], b[1]);
    }
  }
  float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
  for (int nt = 0; nt < TILE_KV / 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = e / 2;
      const bool ok = valid[row] && kv_base + nt * 8 + c + (e % 2) < kv_end;
      s[nt][e] = ok ? s[nt][e] * scale_log2 : neg_inf();
      mx[row] = fmaxf(mx[row], s[nt][e]);
    }
  }
  float rescale[2] = {1.f, 1.f};
  bool grew = false;
#pragma unroll
  for (int row = 0; row < 2; ++row) {
    mx[row] = fmaxf(mx[row], __shfl_xor_sync(0xffffffffu, mx[row], 1));
    mx[row] = fmaxf(mx[row], __shfl_xor_sync(0xffffffffu, mx[row], 2));
    if (UNIFIED && first) {
      // The shared bound, unless this row sits so far below it that P would lose precision.
      st.m[row] = mx[row] >= phi - kUnifiedLowMargin ? phi : neg_inf();
    }
    const float m_new = fmaxf(st.m[row], mx[row]);
    const float m_use = m_new == neg_inf() ? 0.f : m_new;
    if (m_new != st.m[row]) {
      rescale[row] = exp2f(st.m[row] - m_use);
      grew = true;
    }
    st.m[row] = m_new;
    st.l[row] *= rescale[row];
#pragma unroll
    for (int nt = 0; nt < TILE_KV / 8; ++nt) {
      s[nt][2 * row] = exp2f(s[nt][2 * row] - m_use);
      s[nt][2 * row + 1] = exp2f(s[nt][2 * row + 1] - m_use);
      st.l[row] += s[nt][2 * row] + s[nt][2 * row + 1];
    }
  }
  first = false;
  // The unified bound usually holds for every row of the warp: one vote skips D/2 multiplies.
  if (!UNIFIED || __any_sync(0xffffffffu, grew)) {
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      st.o[dt][0] *= rescale[0];
      st.o[dt][1] *= rescale[0];
      st.o[dt][2] *= rescale[1];
      st.o[dt][3] *= rescale[1];
    }
  }
#pragma unroll
  for (int kt = 0; kt < TILE_KV / 16; ++kt) {
    u32 pa[4];
    pa[0] = pack2<T>(s[2 * kt][0], s[2 * kt][1]);
    pa[1] = pack2<T>(s[2 * kt][2], s[2 * kt][3]);
    pa[2] = pack2<T>(s[2 * kt + 1][0], s[2 * kt + 1][1]);
    pa[3] = pack2<T>(s[2 * kt + 1][2], s[2 * kt + 1][3]);
    // Matrices m = 0..3: V rows kt*16 + 8(m%2).., head dims (dt + m/2)*8, transposed: b0, b1 of
    // head-dim tiles dt and dt + 1.
    const T* vrow = v + (kt * 16 + (lm % 2) * 8 + lr) * kS + (lm / 2) * 8;
#pragma unroll
    for (int dt = 0; dt < D / 8; dt += 2) {
      u32 b[4];
      decode_ldsm_x4_trans(b, vrow + dt * 8);
      mma_16816<T>(st.o[dt], pa, b[0], b[1]);
      mma_16816<T>(st.o[dt + 1], pa, b[2], b[3]);
    }
  }
}

/// Combines the splits of one output element: out = Σ_i w_i o_i / Σ_i w_i. LSE variant: w_i =
/// 2^(lse_i - max lse). Unified variant: w_i is the weight the split wrote (relative to the shared
/// bound, no exponentials), unless some split of the row marked -1, which takes the LSE path.
/// Reads through L2 (ld.cg): the partials were written by other blocks of the same launch, after
/// which this SM's L1 must not be trusted.
template <bool SOFTMAX_UNIFIED>
__device__ __forceinline__ float merge_splits(const float* o_partial, const float* lse_partial,
                                              long long slots, long long row_slot,
                                              long long split_stride, int D, int d,
                                              int num_splits) {
  float num = 0.f, den = 0.f;
  bool exact = !SOFTMAX_UNIFIED;
  if (SOFTMAX_UNIFIED) {
    for (int i = 0; i < num_splits; ++i) {
      const long long slot = row_slot + i * split_stride;
      const float w = __ldcg(lse_partial + slots + slot);
      if (w < 0.f) {
        exact = true;
        break;
      }
      den += w;
      num += w * __ldcg(o_partial + slot * D + d);
    }
  }
  if (exact) {
    float m = neg_inf();
    for (int i = 0; i < num_splits; ++i) m = fmaxf(m, __ldcg(lse_partial + row_slot + i * split_stride));
    const float m_use = m == neg_inf() ? 0.f : m;
    num = den = 0.f;
    for (int i = 0; i < num_splits; ++i) {
      const long long slot = row_slot + i * split_stride;
      const float w = exp2f(__ldcg(lse_partial + slot) - m_use);
      den += w;
      num += w * __ldcg(o_partial + slot * D + d);
    }
  }
  return den > 0.f ? num / den : 0.f;
}

/// The cascade merge of one output element: the suffix's `num_splits` partials (as merge_splits
/// lays them out) and, for a sequence that attends to the shared prefix, the prefix kernel's
/// `prefix_splits` partials (prefix_o [prefix_splits, S, Hq, D], prefix_lse [prefix_splits, S,
/// Hq], the same slot numbering). Always the log-sum-exp weights: the prefix kernel has no unified
/// bound, and the first lse array holds every split's log-sum-exp in both softmax variants.
__device__ __forceinline__ float merge_cascade(const float* o_partial, const float* lse_partial,
                                               const float* prefix_o, const float* prefix_lse,
                                               int prefix_splits, long long row_slot,
                                               long long split_stride, int D, int d,
                                               int num_splits) {
  float m = neg_inf();
  for (int i = 0; i < num_splits; ++i)
    m = fmaxf(m, __ldcg(lse_partial + row_slot + i * split_stride));
  for (int i = 0; i < prefix_splits; ++i)
    m = fmaxf(m, __ldcg(prefix_lse + row_slot + i * split_stride));
  const float m_use = m == neg_inf() ? 0.f : m;
  float num = 0.f, den = 0.f;
  for (int i = 0; i < num_splits; ++i) {
    const long long slot = row_slot + i * split_stride;
    const float w = exp2f(__ldcg(lse_partial + slot) - m_use);
    den += w;
    num += w * __ldcg(o_partial + slot * D + d);
  }
  for (int i = 0; i < prefix_splits; ++i) {
    const long long slot = row_slot + i * split_stride;
    const float w = exp2f(__ldcg(prefix_lse + slot) - m_use);
    den += w;
    num += w * __ldcg(prefix_o + slot * D + d);
  }
  return den > 0.f ? num / den : 0.f;
}

/// Attention of split z for sequence x, KV head y (the task's block coordinates), into out[T, Hq,
/// D]. The cache's elements are C: T, or fp8e4m3 codes with scales k_scales / v_scales [NP * PS,
/// Hkv] (null for a T cache). With one split the block writes `out` directly. With more, it writes
/// its partial: o_partial: f32[num_splits, S, Hq, D] (normalized within the split). lse_partial:
/// f32[num_splits, S, Hq] log-sum-exps in log2 units (-inf for an empty split); in the unified
/// variant followed by a second [num_splits, S, Hq] array of the splits' weights 2^(lse - phi) (-1:
/// the split's max is not phi); then counts itself in split_counters[S, Hkv], and the split that
/// counts last merges (merge_splits) and puts the counter back to 0: split_counters must be zero
/// when the launch begins (a zero-filled workspace), and is zero again when it ends. Requires G
/// <= 16. Dynamic shared memory: DecodeSmem<...>::kBytes.
/// CASCADE: the KV range starts at kv_start[seq] (a sequence's suffix), every launch writes
/// partials (even with one split), and the last split merges them with the prefix partials
/// (prefix_o, prefix_lse, prefix_splits; merge_cascade) when kv_start[seq] > 0: a sequence that
/// attends to the shared prefix is exactly one whose suffix starts after it (CascadeLayout).
template <class T, class C, int D, int G, int TILE_KV, int WARPS, int STAGES, bool SOFTMAX_UNIFIED,
          bool CASCADE = false>
__device__ __forceinline__ void flash_attention_decode(
    T* __restrict__ out, float* __restrict__ o_partial, float* __restrict__ lse_partial,
    int* __restrict__ split_counters, const T* __restrict__ q, const C* __restrict__ k_cache,
    const C* __restrict__ v_cache, const float* __restrict__ k_scales,
    const float* __restrict__ v_scales, const int* __restrict__ positions,
    const int* __restrict__ qo_indptr, const int* __restrict__ kv_page_indptr,
    const int* __restrict__ kv_page_indices, const int* __restrict__ kv_last_page_len, int num_seqs,
    int num_kv_heads, int page_size, float scale, float phi,
    const int* __restrict__ kv_start = nullptr, const float* __restrict__ prefix_o = nullptr,
    const float* __restrict__ prefix_lse = nullptr, int prefix_splits = 0) {
  static_assert(G >= 1 && G <= 16, "the query heads of a group fill one 16-row mma tile");
  static_assert(TILE_KV % 16 == 0 && D % 16 == 0, "mma tiles are 16 wide");
  static_assert(STAGES >= 1 && STAGES <= 4, "1 to 4 tiles in flight per warp");
  using Smem = DecodeSmem<T, C, D, TILE_KV, WARPS, STAGES>;
  constexpr bool kFp8 = Smem::kFp8;
  static_assert(kFp8 || sizeof(C) == sizeof(T), "the cache holds T or fp8e4m3 codes");
  constexpr int kThreads = 32 * WARPS;
  constexpr int kS = Smem::kS;
  constexpr int kTileElems = Smem::kTileElems;
  extern __shared__ __align__(16) char smem[];
  __shared__ float m_w[WARPS][16], l_w[WARPS][16];
  (void)positions;  // one query per sequence attends to its whole KV range

  const uint3 block = task_block();
  const int seq = block.x, kv_head = block.y, split = block.z;
  const int num_splits = task_grid().z;
  const int num_q_heads = num_kv_heads * G;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int token = qo_indptr[seq];
  const int page_begin = kv_page_indptr[seq];
  const int num_pages = kv_page_indptr[seq + 1] - page_begin;
  const int kv_len = num_pages == 0 ? 0 : (num_pages - 1) * page_size + kv_last_page_len[seq];
  const int kv_first = CASCADE ? min(kv_start[seq], kv_len) : 0;
  int chunk = (kv_len - kv_first + num_splits - 1) / num_splits;
  chunk = (chunk + TILE_KV - 1) / TILE_KV * TILE_KV;
  const int kv_begin = kv_first + split * chunk, kv_end = min(kv_len, kv_begin + chunk);

  // Q rows: the group's G heads, zero-padded to 16.
  T* q_tile = reinterpret_cast<T*>(smem);
  constexpr int kChunks = D * (int)sizeof(T) / 16;
  for (int i = tid; i < 16 * kChunks; i += kThreads) {
    const int row = i / kChunks, c16 = i % kChunks;
    const bool ok = row < G;
    const T* src = ok ? q + ((long long)token * num_q_heads + kv_head * G + row) * D : q;
    cp_async_16(q_tile + row * kS + c16 * (16 / (int)sizeof(T)),
                reinterpret_cast<const char*>(src) + (ok ? c16 * 16 : 0), ok);
  }
  cp_async_commit();
  cp_async_wait_all();
  block_sync<kThreads>();
  u32 qf[D / 16][4];
  load_q_fragments<T, D>(q_tile, qf);
  const bool valid[2] = {lane / 4 < G, lane / 4 + 8 < G};
  block_sync<kThreads>();

  // The warp's ring: stage i holds K then V of one TILE_KV tile (fp8e4m3: their codes, then
  // their scales), and, for an fp8e4m3 cache, the warp's dequantized K and V tiles after the rings.
  T* ring = reinterpret_cast<T*>(smem) + warp * STAGES * 2 * kTileElems;
  unsigned char* ring8 = reinterpret_cast<unsigned char*>(smem) + warp * STAGES * Smem::kStage;
  T* k_deq = reinterpret_cast<T*>(smem + Smem::kRing) + warp * 2 * kTileElems;
  T* v_deq = k_deq + kTileElems;
  const int first_base = kv_begin + warp * TILE_KV;
  constexpr int kStride = WARPS * TILE_KV;
  const int num_tiles = first_base < kv_end ? (kv_end - first_base + kStride - 1) / kStride : 0;
  // Page indices run one tile ahead of the copies (FlashInfer prefetches them to shared memory):
  // lane l holds the page of row l (and l + 32) of the next tile in a register, loaded right
  // after the current tile's copies are issued, so the dependent index load never stalls an
  // issue; the copy loop gets each row's page by a shuffle instead of a load per 16 bytes.
  constexpr int kPageRegs = (TILE_KV + 31) / 32;
  constexpr int kPieces = TILE_KV * kChunks;  // 16-byte pieces of one K (or V) tile
  static_assert(kPieces % 32 == 0, "every lane takes the same number of pieces");
  int pg[kPageRegs];
  auto fetch_pages = [&](int t) {
#pragma unroll
    for (int i = 0; i < kPageRegs; ++i) {
      const int row = lane + 32 * i;
      const int j = first_base + t * kStride + row;
      pg[i] = t < num_tiles && row < TILE_KV && j < kv_end
                  ? kv_page_indices[page_begin + j / page_size]
                  : 0;
    }
  };
  // fp8e4m3: a stage's codes (16-byte pieces, D / 16 per row: with some head sizes not a whole
  // number of pieces per lane, so every lane runs every round of the page shuffles) and scales
  // (lane l copies row l's, whose page it holds itself).
  auto issue_fp8 = [&](int t) {
    if (t < num_tiles) {
      unsigned char* st = ring8 + (t % STAGES) * Smem::kStage;
      const int base = first_base + t * kStride;
      constexpr int kRowPieces = D / 16;
      constexpr int kCodePieces = TILE_KV * kRowPieces;
      const unsigned char* kc = reinterpret_cast<const unsigned char*>(k_cache);
      const unsigned char* vc = reinterpret_cast<const unsigned char*>(v_cache);
#pragma unroll
      for (int i0 = 0; i0 < kCodePieces; i0 += 32) {
        const int i = i0 + lane;
        const int row = (i < kCodePieces ? i : 0) / kRowPieces, piece = i % kRowPieces;
        int page = __shfl_sync(0xffffffffu, pg[0], row % 32);
        if (kPageRegs > 1) {
          const int hi = __shfl_sync(0xffffffffu, pg[kPageRegs - 1], row % 32);
          page = row >= 32 ? hi : page;
        }
        if (i >= kCodePieces) continue;
        const int j = base + row;
        const bool ok = j < kv_end;
        const long long off =
            ok ? ((long long)page * page_size + j % page_size) * num_kv_heads * D +
                     (long long)kv_head * D + piece * 16
               : 0;
        unsigned char* dst = st + row * D + piece * 16;
        cp_async_16(dst, kc + off, ok);
        cp_async_16(dst + TILE_KV * D, vc + off, ok);
      }
#pragma unroll
      for (int r0 = 0; r0 < TILE_KV; r0 += 32) {
        const int row = r0 + lane, j = base + row;
        if (row >= TILE_KV) continue;
        const bool ok = j < kv_end;
        const long long so =
            ok ? ((long long)pg[r0 / 32] * page_size + j % page_size) * num_kv_heads + kv_head : 0;
        float* scales = reinterpret_cast<float*>(st + 2 * TILE_KV * D);
        cp_async_4(scales + row, k_scales + so, ok);
        cp_async_4(scales + TILE_KV + row, v_scales + so, ok);
      }
    }
    cp_async_commit();  // an empty group past the end keeps the wait counts uniform
    fetch_pages(t + 1);
  };
  auto issue_t = [&](int t) {
    if (t < num_tiles) {
      T* kt = ring + (t % STAGES) * 2 * kTileElems;
      const int base = first_base + t * kStride;
#pragma unroll
      for (int i = lane; i < kPieces; i += 32) {
        const int row = i / kChunks, piece = i % kChunks;
        int page = __shfl_sync(0xffffffffu, pg[0], row % 32);
        if (kPageRegs > 1) {
          const int hi = __shfl_sync(0xffffffffu, pg[kPageRegs - 1], row % 32);
          page = row >= 32 ? hi : page;
        }
        const int j = base + row;
        const bool ok = j < kv_end;
        const long long off =
            ok ? ((long long)page * page_size + j % page_size) * num_kv_heads * D +
                     (long long)kv_head * D + piece * (16 / (int)sizeof(T))
               : 0;
        T* dst = kt + row * kS + piece * (16 / (int)sizeof(T));
        cp_async_16(dst, reinterpret_cast<const T*>(k_cache) + off, ok);
        cp_async_16(dst + kTileElems, reinterpret_cast<const T*>(v_cache) + off, ok);
      }
    }
    cp_async_commit();  // an empty group past the end keeps the wait counts uniform
    fetch_pages(t + 1);
  };
  auto issue = [&](int t) {
    if constexpr (kFp8) {
      issue_fp8(t);
    } else {
      issue_t(t);
    }
  };
  fetch_pages(0);
#pragma unroll
  for (int t = 0; t < STAGES - 1; ++t) issue(t);

  WarpAttnState<D> st;
  st.init();
  bool first = true;
  const float scale_log2 = scale * 1.4426950408889634f;
  for (int t = 0; t < num_tiles; ++t) {
    issue(t + STAGES - 1);
    cp_async_wait_group<STAGES - 1>();
    __syncwarp();
    const T* kt = ring + (t % STAGES) * 2 * kTileElems;
    const T* vt = kt + kTileElems;
    if constexpr (kFp8) {
      // Codes * scales -> the warp's 16-bit tiles (rows past the sequence end are zero codes
      // with zero scales, masked anyway).
      const unsigned char* s8 = ring8 + (t % STAGES) * Smem::kStage;
      const float* scales = reinterpret_cast<const float*>(s8 + 2 * TILE_KV * D);
      dequantize_tile<T, D, TILE_KV, 32>(k_deq, s8, scales, lane);
      dequantize_tile<T, D, TILE_KV, 32>(v_deq, s8 + TILE_KV * D, scales + TILE_KV, lane);
      __syncwarp();
      kt = k_deq;
      vt = v_deq;
    }
    decode_attend_tile<T, D, TILE_KV, SOFTMAX_UNIFIED>(qf, kt, vt, first_base + t * kStride, kv_end,
                                                       valid, scale_log2, phi, first, st);
    __syncwarp();  // the slot is refilled by the next iteration's issue
  }
  cp_async_wait_all();
  finish_row_sums<D>(st);

  // Merge the warps' states: o_w = [WARPS][16][D] f32 in the (now free) ring.
  block_sync<kThreads>();
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
  block_sync<kThreads>();
  const long long slots = (long long)num_splits * num_seqs * num_q_heads;
  const long long split_stride = (long long)num_seqs * num_q_heads;
  const long long row_slot0 = (long long)seq * num_q_heads + kv_head * G;
  for (int i = tid; i < G * D; i += kThreads) {
    const int row = i / D, d = i % D;
    float m = neg_inf();
#pragma unroll
    for (int w = 0; w < WARPS; ++w) {
      if (l_w[w][row] > 0.f) m = fmaxf(m, m_w[w][row]);  // a warp with no rows keeps phi as m
    }
    const float m_use = m == neg_inf() ? 0.f : m;
    float l = 0.f, o = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) {
      const float f = l_w[w][row] > 0.f ? exp2f(m_w[w][row] - m_use) : 0.f;
      l += l_w[w][row] * f;
      o += o_w[(w * 16 + row) * D + d] * f;
    }
    if (!CASCADE && num_splits == 1) {  // the whole KV range: no partial, no merge
      out[((long long)token * num_q_heads + kv_head * G + row) * D + d] =
          from_float<T>(l > 0.f ? o / l : 0.f);
      continue;
    }
    const long long slot = split * split_stride + row_slot0 + row;
    o_partial[slot * D + d] = l > 0.f ? o / l : 0.f;
    if (d == 0) {
      lse_partial[slot] = l > 0.f ? m + __log2f(l) : neg_inf();
      // The weight relative to the shared bound, when this split's max is the bound.
      if (SOFTMAX_UNIFIED) lse_partial[slots + slot] = l == 0.f ? 0.f : m == phi ? l : -1.f;
    }
  }
  if (!CASCADE && num_splits == 1) return;

  // The last split of this (sequence, KV head) to finish merges. Each thread's partial stores
  // are made visible device-wide before the block counts itself (the threadfence-reduction
  // pattern of the CUDA samples); the last block fences again before reading the others'.
  __shared__ bool is_last;
  __threadfence();
  block_sync<kThreads>();
  if (tid == 0) {
    int* counter = split_counters + (long long)seq * num_kv_heads + kv_head;
    is_last = atomicAdd(counter, 1) == num_splits - 1;
    if (is_last) *counter = 0;  // every split has counted: ready for the next launch
  }
  block_sync<kThreads>();
  if (!is_last) return;
  __threadfence();
  const bool with_prefix = CASCADE && kv_start[seq] > 0;
  for (int i = tid; i < G * D; i += kThreads) {
    const int row = i / D, d = i % D;
    const float v =
        CASCADE ? merge_cascade(o_partial, lse_partial, prefix_o, prefix_lse,
                                with_prefix ? prefix_splits : 0, row_slot0 + row, split_stride, D,
                                d, num_splits)
                : merge_splits<SOFTMAX_UNIFIED>(o_partial, lse_partial, slots, row_slot0 + row,
                                                split_stride, D, d, num_splits);
    out[((long long)token * num_q_heads + kv_head * G + row) * D + d] = from_float<T>(v);
  }
}

}  // namespace kiln_k
