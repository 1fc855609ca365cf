// The warp-level core shared by the prefill and decode attention families: 16 query rows against
// one KV tile in shared memory with tensor-core mma.sync and FlashAttention-2's online softmax.
//
// Layouts (row = one (token, query head) pair): a warp owns 16 rows. Per mma m16n8k16 fragment a
// lane holds rows lane/4 and lane/4+8, columns 2*(lane%4)+{0,1} (+8 for the second k half).
#pragma once

#include "common.cuh"
#include "fp8.cuh"

namespace kiln_k {

/// Shared-memory row stride (elements) of a [rows, D] tile: 8 elements (16 bytes) of padding make
/// the 8 rows a fragment load touches fall into different banks.
template <int D>
struct TileStride {
  static constexpr int value = D + 8;
};

/// Running softmax state of the 16 rows a warp owns (FlashAttention-2, Dao 2023): per lane, two
/// rows' max m (log2 domain), partial sums l over this lane's columns (reduced across the 4 lanes
/// of a row only once at the end), and the unnormalized output accumulators.
template <int D>
struct WarpAttnState {
  float m[2];
  float l[2];
  float o[D / 8][4];

  __device__ __forceinline__ void init() {
    m[0] = m[1] = neg_inf();
    l[0] = l[1] = 0.f;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  }
};

/// Loads the A fragments of 16 query rows x D from a shared tile `q` (row stride TileStride<D>).
template <class T, int D>
__device__ __forceinline__ void load_q_fragments(const T* q, u32 (&qf)[D / 16][4]) {
  constexpr int kS = TileStride<D>::value;
  const int lane = threadIdx.x % 32;
  const int r = lane / 4, c = 2 * (lane % 4);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const T* base = q + kk * 16 + c;
    qf[kk][0] = *reinterpret_cast<const u32*>(base + r * kS);
    qf[kk][1] = *reinterpret_cast<const u32*>(base + (r + 8) * kS);
    qf[kk][2] = *reinterpret_cast<const u32*>(base + r * kS + 8);
    qf[kk][3] = *reinterpret_cast<const u32*>(base + (r + 8) * kS + 8);
  }
}

/// One KV tile of TILE_KV rows (`k`, `v` in shared memory, row stride TileStride<D>) against the
/// warp's 16 rows. `scale_log2` = softmax scale * log2(e) so that exp2 replaces exp. Column j of
/// the tile is KV position `kv_base + j`; it is masked when >= kv_len or > the row's position
/// (`pos[i]` = -1 masks the whole row: a padding row of a partial query tile).
template <class T, int D, int TILE_KV>
__device__ __forceinline__ void warp_attend_tile(const u32 (&qf)[D / 16][4], const T* k, const T* v,
                                                 int kv_base, int kv_len, const int (&pos)[2],
                                                 float scale_log2, WarpAttnState<D>& st) {
  constexpr int kS = TileStride<D>::value;
  const int lane = threadIdx.x % 32;
  const int r = lane / 4, c = 2 * (lane % 4);

  // S = Q·Kᵀ: B fragment column n is K row n, contiguous over d ("col" layout needs no transpose).
  float s[TILE_KV / 8][4];
#pragma unroll
  for (int nt = 0; nt < TILE_KV / 8; ++nt) {
    s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    const T* krow = k + (nt * 8 + r) * kS + c;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      u32 b0 = *reinterpret_cast<const u32*>(krow + kk * 16);
      u32 b1 = *reinterpret_cast<const u32*>(krow + kk * 16 + 8);
      mma_16816<T>(s[nt], qf[kk], b0, b1);
    }
  }

  // Mask (causal by each token's position, and the sequence's KV length) and row maxima.
  float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
  for (int nt = 0; nt < TILE_KV / 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = e / 2;
      const int j = kv_base + nt * 8 + c + (e % 2);
      const bool ok = j < kv_len && j <= pos[row];
      s[nt][e] = ok ? s[nt][e] * scale_log2 : neg_inf();
      mx[row] = fmaxf(mx[row], s[nt][e]);
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
    rescale[row] = exp2f(st.m[row] - m_use);
    st.m[row] = m_new;
    st.l[row] *= rescale[row];
#pragma unroll
    for (int nt = 0; nt < TILE_KV / 8; ++nt) {
      s[nt][2 * row] = exp2f(s[nt][2 * row] - m_use);
      s[nt][2 * row + 1] = exp2f(s[nt][2 * row + 1] - m_use);
      st.l[row] += s[nt][2 * row] + s[nt][2 * row + 1];
    }
  }
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) {
    st.o[dt][0] *= rescale[0];
    st.o[dt][1] *= rescale[0];
    st.o[dt][2] *= rescale[1];
    st.o[dt][3] *= rescale[1];
  }

  // O += P·V. The accumulator layout of two adjacent 8-column score tiles is exactly the A
  // fragment layout of one 16-wide k step, so P never leaves registers (FlashAttention-2).
#pragma unroll
  for (int kt = 0; kt < TILE_KV / 16; ++kt) {
    u32 pa[4];
    pa[0] = pack2<T>(s[2 * kt][0], s[2 * kt][1]);
    pa[1] = pack2<T>(s[2 * kt][2], s[2 * kt][3]);
    pa[2] = pack2<T>(s[2 * kt + 1][0], s[2 * kt + 1][1]);
    pa[3] = pack2<T>(s[2 * kt + 1][2], s[2 * kt + 1][3]);
    // B = V rows kt*16.. as k, head dims as n; V is [kv, d] row-major, so each B register packs
    // two KV rows of one column (ldmatrix.trans would do this in one instruction; a later tuning).
    const u16* vb = reinterpret_cast<const u16*>(v) + (kt * 16 + c) * kS + r;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      const u16* col = vb + dt * 8;
      u32 b0 = u32(col[0]) | (u32(col[kS]) << 16);
      u32 b1 = u32(col[8 * kS]) | (u32(col[9 * kS]) << 16);
      mma_16816<T>(st.o[dt], pa, b0, b1);
    }
  }
}

/// Sums the per-lane partial l over the 4 lanes of each row (done once, after the KV loop).
template <int D>
__device__ __forceinline__ void finish_row_sums(WarpAttnState<D>& st) {
#pragma unroll
  for (int row = 0; row < 2; ++row) {
    st.l[row] += __shfl_xor_sync(0xffffffffu, st.l[row], 1);
    st.l[row] += __shfl_xor_sync(0xffffffffu, st.l[row], 2);
  }
}

/// Copies KV rows [kv_base, kv_base + ROWS) of one KV head from the paged cache into a shared
/// tile with cp.async, THREADS threads cooperating (thread `tid` of them). Cache layout per layer:
/// [num_pages, page_size, Hkv, D] (NHD); KV position j lives in page
/// kv_page_indices[page_begin + j / page_size] at slot j % page_size (FlashInfer's CSR page table).
template <class T, int D, int ROWS, int THREADS>
__device__ __forceinline__ void load_kv_tile(T* tile, const T* cache, const int* page_indices,
                                             int page_begin, int page_size, int num_kv_heads,
                                             int kv_head, int kv_base, int kv_len, int tid) {
  constexpr int kS = TileStride<D>::value;
  constexpr int kChunks = D * (int)sizeof(T) / 16;  // 16-byte pieces per row
#pragma unroll
  for (int i = tid; i < ROWS * kChunks; i += THREADS) {
    const int row = i / kChunks, chunk = i % kChunks;
    const int j = kv_base + row;
    const bool valid = j < kv_len;
    const T* src = cache;
    if (valid) {
      const int page = page_indices[page_begin + j / page_size];
      src = cache +
            ((long long)(page * (long long)page_size + j % page_size) * num_kv_heads + kv_head) * D;
    }
    cp_async_16(tile + row * kS + chunk * (16 / (int)sizeof(T)),
                reinterpret_cast<const char*>(src) + (valid ? chunk * 16 : 0), valid);
  }
}

/// load_kv_tile for an fp8e4m3 cache, synchronously: each thread reads 16 codes of a row and the
/// row's scale (scales [NP * PS, Hkv]) from global memory and stores their 16 dequantized values
/// (fp8.cuh) into the shared tile of T. Rows past `kv_len` are zeros.
template <class T, int D, int ROWS, int THREADS>
__device__ __forceinline__ void load_kv_tile_fp8(T* tile, const fp8e4m3* cache, const float* scales,
                                                 const int* page_indices, int page_begin,
                                                 int page_size, int num_kv_heads, int kv_head,
                                                 int kv_base, int kv_len, int tid) {
  constexpr int kS = TileStride<D>::value;
  constexpr int kPieces = D / 16;  // 16 codes per piece
#pragma unroll
  for (int i = tid; i < ROWS * kPieces; i += THREADS) {
    const int row = i / kPieces, piece = i % kPieces;
    const int j = kv_base + row;
    Bytes16 codes = {{0u, 0u, 0u, 0u}};
    float s = 0.f;
    if (j < kv_len) {
      const int page = page_indices[page_begin + j / page_size];
      const long long r = ((long long)page * page_size + j % page_size) * num_kv_heads + kv_head;
      codes = *reinterpret_cast<const Bytes16*>(reinterpret_cast<const unsigned char*>(cache) +
                                                r * D + piece * 16);
      s = scales[r];
    }
    dequantize16<T>(codes, s, tile + row * kS + piece * 16);
  }
}

/// The codes and scales of KV rows [kv_base, kv_base + ROWS) of one KV head of an fp8e4m3 cache
/// into shared memory with cp.async (codes [ROWS][D] bytes, scales [ROWS] f32); THREADS threads
/// cooperate. Rows past `kv_len` are zero-filled. dequantize_tile turns them into a tile of T.
template <int D, int ROWS, int THREADS>
__device__ __forceinline__ void load_kv_codes(unsigned char* codes, float* row_scales,
                                              const fp8e4m3* cache, const float* scales,
                                              const int* page_indices, int page_begin,
                                              int page_size, int num_kv_heads, int kv_head,
                                              int kv_base, int kv_len, int tid) {
  constexpr int kPieces = D / 16;
  const unsigned char* c = reinterpret_cast<const unsigned char*>(cache);
#pragma unroll
  for (int i = tid; i < ROWS * kPieces; i += THREADS) {
    const int row = i / kPieces, piece = i % kPieces;
    const int j = kv_base + row;
    const bool valid = j < kv_len;
    long long r = 0;
    if (valid) {
      const int page = page_indices[page_begin + j / page_size];
      r = ((long long)page * page_size + j % page_size) * num_kv_heads + kv_head;
    }
    cp_async_16(codes + row * D + piece * 16, c + (valid ? r * D + piece * 16 : 0), valid);
    if (piece == 0) cp_async_4(row_scales + row, scales + r, valid);
  }
}

}  // namespace kiln_k
