// Cascade attention (FlashInfer's cascade inference, Ye et al. 2024) for a decode step whose
// sequences share a prefix of KV pages (the prefix cache hands them the same physical pages).
// Plain paged decode reads the shared prefix once per sequence; here one multi-query launch reads
// it once per block of WARPS x 16 query rows: every K/V tile of the prefix lands in shared memory
// once and every warp of the block (16 query rows each: the G query heads of several sequences,
// flattened) attends to it. The result per (sequence, query head) is a partial output plus its
// log-sum-exp per KV split. The suffix (each sequence's own pages, after the prefix) is the decode
// kernel (flash_attention_decode.cuh with CASCADE = true), whose last split merges the prefix
// partials into the output with its own through the log-sum-exp merge: three steps, two launches.
#pragma once

#include "flash_attention_decode.cuh"

namespace kiln_k {

/// Dynamic shared memory of the prefix kernel: the block's query rows (WARPS x 16 rows of D), then
/// two stages of K and V tiles (TILE_KV rows each). codegen's CascadePrefixSpec::shared_bytes()
/// computes the same sum.
template <class T, int D, int TILE_KV, int WARPS>
struct CascadePrefixSmem {
  static constexpr int kS = TileStride<D>::value;
  static constexpr int kTileElems = TILE_KV * kS;
  static constexpr int kQ = WARPS * 16 * kS * (int)sizeof(T);
  static constexpr int kStages = 2;
  static constexpr int kBytes = kQ + kStages * 2 * kTileElems * (int)sizeof(T);
};

/// Split z of the shared prefix for query-row block x and KV head y. The prefix is KV positions
/// [0, prefix_len) of the page list prefix_pages (the last page may be partly used: the prefix
/// may end mid-page), attended to by the num_members sequences prefix_seqs[] (indices into the
/// step's sequences). Query row r of a KV head is query head r % G of member r / G, read at the
/// member's query token qo_indptr[seq] (one per sequence: decode). Writes, per member sequence
/// seq and query head h: prefix_o [num_splits, S, Hq, D] (normalized within the split) and
/// prefix_lse [num_splits, S, Hq] (log2 units, -inf for an empty split): the slot numbering of the
/// decode kernel's partials, which its CASCADE merge reads. Other sequences' slots are untouched.
/// The grid may have more row blocks than rows (a fixed grid for a batch bucket): those blocks
/// return at once. Requires G <= 16; a block is WARPS x 32 threads; dynamic shared memory:
/// CascadePrefixSmem<...>::kBytes.
template <class T, int D, int G, int TILE_KV, int WARPS>
__device__ __forceinline__ void cascade_prefix_attention(
    float* __restrict__ prefix_o, float* __restrict__ prefix_lse, const T* __restrict__ q,
    const T* __restrict__ k_cache, const T* __restrict__ v_cache, const int* __restrict__ qo_indptr,
    const int* __restrict__ prefix_seqs, const int* __restrict__ prefix_pages, int num_members,
    int prefix_len, int num_seqs, int num_kv_heads, int page_size, float scale) {
  static_assert(G >= 1 && G <= 16, "a sequence's query heads stay within one 16-row tile");
  static_assert(TILE_KV % 16 == 0 && D % 16 == 0, "mma tiles are 16 wide");
  using Smem = CascadePrefixSmem<T, D, TILE_KV, WARPS>;
  constexpr int kThreads = 32 * WARPS;
  constexpr int kS = Smem::kS;
  constexpr int kTileElems = Smem::kTileElems;
  constexpr int kRows = WARPS * 16;
  extern __shared__ __align__(16) char smem[];

  const uint3 block = task_block();
  const int row_block = block.x, kv_head = block.y, split = block.z;
  const int num_splits = task_grid().z;
  const int num_q_heads = num_kv_heads * G;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int rows = num_members * G;
  const int row0 = row_block * kRows;
  if (row0 >= rows) return;  // the whole block is past the members (uniform: no barrier skipped)
  int chunk = (prefix_len + num_splits - 1) / num_splits;
  chunk = (chunk + TILE_KV - 1) / TILE_KV * TILE_KV;
  const int kv_begin = split * chunk, kv_end = min(prefix_len, kv_begin + chunk);

  // The block's query rows, zero-filled past the last member.
  T* q_tile = reinterpret_cast<T*>(smem);
  constexpr int kChunks = D * (int)sizeof(T) / 16;
  for (int i = tid; i < kRows * kChunks; i += kThreads) {
    const int row = i / kChunks, c16 = i % kChunks;
    const int r = row0 + row;
    const bool ok = r < rows;
    const T* src = q;
    if (ok) {
      const int token = qo_indptr[prefix_seqs[r / G]];
      src = q + ((long long)token * num_q_heads + kv_head * G + r % G) * D;
    }
    cp_async_16(q_tile + row * kS + c16 * (16 / (int)sizeof(T)),
                reinterpret_cast<const char*>(src) + (ok ? c16 * 16 : 0), ok);
  }
  cp_async_commit();

  // K/V tiles, double-buffered and shared by every warp: the point of the kernel. The first
  // tile's copies join the Q copies' flight.
  T* kv = reinterpret_cast<T*>(smem + Smem::kQ);
  const int num_tiles = kv_begin < kv_end ? (kv_end - kv_begin + TILE_KV - 1) / TILE_KV : 0;
  auto issue = [&](int t) {
    if (t < num_tiles) {
      T* kt = kv + (t % 2) * 2 * kTileElems;
      const int base = kv_begin + t * TILE_KV;
      load_kv_tile<T, D, TILE_KV, kThreads>(kt, k_cache, prefix_pages, 0, page_size, num_kv_heads,
                                            kv_head, base, kv_end, tid);
      load_kv_tile<T, D, TILE_KV, kThreads>(kt + kTileElems, v_cache, prefix_pages, 0, page_size,
                                            num_kv_heads, kv_head, base, kv_end, tid);
    }
    cp_async_commit();  // an empty group past the end keeps the wait counts uniform
  };
  issue(0);
  cp_async_wait_group<1>();  // the Q rows (the older group) have landed
  block_sync<kThreads>();
  u32 qf[D / 16][4];
  load_q_fragments<T, D>(q_tile + warp * 16 * kS, qf);
  const int wrow = row0 + warp * 16 + lane / 4;
  const bool valid[2] = {wrow < rows, wrow + 8 < rows};

  WarpAttnState<D> st;
  st.init();
  bool first = true;
  const float scale_log2 = scale * 1.4426950408889634f;
  for (int t = 0; t < num_tiles; ++t) {
    issue(t + 1);
    cp_async_wait_group<1>();
    block_sync<kThreads>();
    const T* kt = kv + (t % 2) * 2 * kTileElems;
    decode_attend_tile<T, D, TILE_KV, false>(qf, kt, kt + kTileElems, kv_begin + t * TILE_KV,
                                             kv_end, valid, scale_log2, 0.f, first, st);
    block_sync<kThreads>();  // every warp is done with the stage before the next issue refills it
  }
  cp_async_wait_all();
  finish_row_sums<D>(st);

  const long long split_stride = (long long)num_seqs * num_q_heads;
  const int c = 2 * (lane % 4);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = wrow + 8 * h;
    if (r >= rows) continue;
    const int seq = prefix_seqs[r / G];
    const long long slot =
        split * split_stride + (long long)seq * num_q_heads + kv_head * G + r % G;
    const float l = st.l[h];
    const float inv = l > 0.f ? 1.f / l : 0.f;
    float* o = prefix_o + slot * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      o[dt * 8 + c] = st.o[dt][2 * h] * inv;
      o[dt * 8 + c + 1] = st.o[dt][2 * h + 1] * inv;
    }
    if (lane % 4 == 0) prefix_lse[slot] = l > 0.f ? st.m[h] + __log2f(l) : neg_inf();
  }
}

}  // namespace kiln_k
