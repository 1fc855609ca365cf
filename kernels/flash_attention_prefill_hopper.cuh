// Paged causal prefill attention for Hopper (sm_90a), FlashAttention-3 class: the same rows, grid
// and result as flash_attention_prefill_pipelined.cuh, with
//  * warpgroup MMAs (wgmma.mma_async): S = Q·Kᵀ with Q and K read from shared memory, O += P·V
//    with P taken from registers as the A operand and V read from shared memory transposed;
//  * warp specialization: warpgroup 0 is the producer, which gathers the paged K/V tiles into a
//    STAGES-deep shared-memory ring (one 16-byte cp.async per thread and piece: page size stays a
//    run-time value and a page may hold a single row) and signals each landed tile on an mbarrier
//    (cp.async.mbarrier.arrive); warpgroups 1 and 2 are consumers that own 64 query rows each and
//    hand a stage back through an "empty" mbarrier once their wgmmas have read it;
//  * FlashAttention-3's two overlaps: inside a consumer, S of tile t is computed while P·V of tile
//    t-1 runs (both in flight, then the softmax of tile t); between the consumers, a ping-pong of
//    two named barriers lets one warpgroup issue its matmuls while the other does its softmax;
//  * causal tiles past the block's last query position skipped, only tiles that cross the block's
//    first position or the sequence end masked; exp2 of log2(e)-prescaled scores;
//  * the output normalized, staged through the warpgroup's own (then idle) rows of the Q tile and
//    written in 16-byte row-contiguous stores.
//
// Why cp.async and not TMA for K/V: the cache is [pages, page_size, Hkv, D] (NHD), so one KV head's
// rows are D contiguous elements every Hkv * D, grouped by pages of run-time size; a tensor map
// over the pool would need a host-encoded descriptor per layer (new plan bindings), and 1-D bulk
// copies cannot write the 128-byte swizzle the wgmma descriptors read. A producer warpgroup of 128
// threads issuing 16-byte copies keeps 2 stages (64 KB) in flight, as FlashAttention-3 does for
// page sizes its TMA path does not take.
//
// Shared memory (dynamic, rounded up to 1024 bytes inside the kernel: the 128-byte swizzle is a
// function of address bits 4-9): Q [D/64][128 rows][64], then STAGES x (K, V) [D/64][TILE_KV][64],
// each 64-column block of rows 128 bytes apart with 16-byte piece p of row r stored at piece
// p ^ (r % 8) (the canonical K-major SW128 layout for Q and K; for V the same bytes are the N-major
// SW128 layout of B = V, d along N), then the mbarriers. hopper_prefill_smem_bytes() is the sum,
// which codegen repeats and the kernel checks (it traps when launched with less).
//
// Rows are (token, query head of one KV group) pairs, token-major (GQA packing), 128 per block.
// The cache must hold T itself: an fp8e4m3 cache is refused by codegen for this kernel.
#pragma once

#include "attention_common.cuh"

namespace kiln_k {

/// Dynamic shared bytes of flash_attention_prefill_hopper: 1024 bytes of alignment slack, the Q
/// tile, STAGES K and V tiles, and 3 * STAGES mbarriers (codegen computes the same sum).
template <int D, int TILE_KV, int STAGES>
__host__ __device__ constexpr int hopper_prefill_smem_bytes() {
  return 1024 + 128 * D * 2 + STAGES * 2 * TILE_KV * D * 2 + 3 * STAGES * 8;
}

/// D(64xN, f32) (+)= A·B, A 64x16 and B 16xN (K-major) from shared-memory descriptors; scale_d = 0
/// overwrites D.
template <class T, int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], u64 a, u64 b, int scale_d);
/// D(64xN, f32) += A·B, A 64x16 from registers (the m16n8k16 A layout per warp), B 16xN from a
/// shared-memory descriptor in N-major ("transposed") layout.
template <class T, int N>
__device__ __forceinline__ void wgmma_rs_tb(float (&d)[N / 2], const u32 (&a)[4], u64 b);

/// 16 bytes moved as one vector (NVRTC is given no headers, so no uint4).
struct __align__(16) HopperVec16 {
  u32 x, y, z, w;
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
template <>
__device__ __forceinline__ void wgmma_ss<bf16, 64>(float (&d)[32], u64 a, u64 b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%"
      "25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(a), "l"(b), "r"(scale_d));
}
template <>
__device__ __forceinline__ void wgmma_rs_tb<bf16, 64>(float (&d)[32], const u32 (&a)[4], u64 b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%"
      "25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_ss<f16, 64>(float (&d)[32], u64 a, u64 b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%"
      "25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(a), "l"(b), "r"(scale_d));
}
template <>
__device__ __forceinline__ void wgmma_rs_tb<f16, 64>(float (&d)[32], const u32 (&a)[4], u64 b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%"
      "25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_ss<bf16, 128>(float (&d)[64], u64 a, u64 b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%"
      "25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%"
      "48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1, 0, "
      "0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63])
      : "l"(a), "l"(b), "r"(scale_d));
}
template <>
__device__ __forceinline__ void wgmma_rs_tb<bf16, 128>(float (&d)[64], const u32 (&a)[4], u64 b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%"
      "25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%"
      "48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p, "
      "1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_ss<f16, 128>(float (&d)[64], u64 a, u64 b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%"
      "25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%"
      "48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1, 0, "
      "0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63])
      : "l"(a), "l"(b), "r"(scale_d));
}
template <>
__device__ __forceinline__ void wgmma_rs_tb<f16, 128>(float (&d)[64], const u32 (&a)[4], u64 b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%"
      "25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%"
      "48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p, "
      "1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

/// A wgmma shared-memory matrix descriptor: 128-byte swizzle, start address, leading and stride
/// byte offsets (all in 16-byte units; the 14-bit fields cover the 228 KB of shared memory).
__device__ __forceinline__ u64 wgmma_desc(u32 smem_addr, u32 lead_bytes, u32 stride_bytes) {
  return (u64)((smem_addr & 0x3FFFF) >> 4) | ((u64)((lead_bytes >> 4) & 0x3FFF) << 16) |
         ((u64)((stride_bytes >> 4) & 0x3FFF) << 32) | (1ull << 62);
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
/// Pins accumulator registers at this point of the program: the compiler sees the wgmma asm as
/// writing them at issue, so without this it could move reads (softmax, rescale) above the
/// wgmma.wait_group that actually makes them valid.
template <int N>
__device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
/// Waits until the phase of parity `parity` of the mbarrier has completed.
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
  u32 done;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
__device__ __forceinline__ void mbar_arrive(u32 bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
/// One of the mbarrier's expected arrivals, made when all of this thread's earlier cp.async
/// copies have landed.
__device__ __forceinline__ void mbar_arrive_cp_async(u32 bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(bar) : "memory");
}
/// Orders this thread's generic-proxy shared-memory accesses (cp.async landings, plain stores)
/// with the async proxy's (wgmma operand reads).
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
template <int ID, int THREADS>
__device__ __forceinline__ void named_sync() {
  asm volatile("bar.sync %0, %1;" ::"n"(ID), "n"(THREADS) : "memory");
}
template <int THREADS>
__device__ __forceinline__ void named_sync(int id) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "n"(THREADS) : "memory");
}
template <int THREADS>
__device__ __forceinline__ void named_arrive(int id) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "n"(THREADS) : "memory");
}

/// Byte offset of 16-byte piece `piece` (of D / 8) of row `row` in a [D/64][ROWS][64] tile with
/// the 128-byte swizzle.
template <int ROWS>
__device__ __forceinline__ u32 sw128_offset(int row, int piece) {
  return (u32)((piece / 8) * ROWS * 128 + row * 128 + (((piece % 8) ^ (row % 8)) << 4));
}

/// 2^x on the SFU; 2^-inf = +0, which is how masked scores vanish.
__device__ __forceinline__ float hopper_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/// The online-softmax step of one consumer thread for one tile: s (the wgmma accumulator layout:
/// per 8-column block nt, s[4nt + {0,1}] row g, s[4nt + {2,3}] row g + 8, columns 2 * (lane % 4)
/// + {0,1}) becomes exp2(scale_log2 * s - m) in place, m and l move on, and rescale[] is what the
/// output accumulated so far must be multiplied by.
template <int TILE_KV, bool MASK>
__device__ __forceinline__ void hopper_softmax(float (&s)[TILE_KV / 2], float (&m)[2],
                                               float (&l)[2], float (&rescale)[2], int kv_base,
                                               int kv_len, const int (&pos)[2], float scale_log2) {
  const int c = 2 * (threadIdx.x % 4);
  float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
  for (int i = 0; i < TILE_KV / 2; ++i) {
    const int row = (i / 2) % 2;
    float x = s[i] * scale_log2;
    if (MASK) {
      const int j = kv_base + (i / 4) * 8 + c + (i % 2);
      if (!(j < kv_len && j <= pos[row])) x = neg_inf();
    }
    s[i] = x;
    mx[row] = fmaxf(mx[row], x);
  }
#pragma unroll
  for (int row = 0; row < 2; ++row) {
    mx[row] = fmaxf(mx[row], __shfl_xor_sync(0xffffffffu, mx[row], 1));
    mx[row] = fmaxf(mx[row], __shfl_xor_sync(0xffffffffu, mx[row], 2));
    const float m_new = fmaxf(m[row], mx[row]);
    // A row with nothing unmasked yet keeps m = -inf; subtract 0 instead so exp2 gives 0, not NaN.
    const float m_use = m_new == neg_inf() ? 0.f : m_new;
    rescale[row] = hopper_exp2(m[row] - m_use);
    m[row] = m_new;
    l[row] *= rescale[row];
  }
  const float m_use[2] = {m[0] == neg_inf() ? 0.f : m[0], m[1] == neg_inf() ? 0.f : m[1]};
#pragma unroll
  for (int i = 0; i < TILE_KV / 2; ++i) {
    const int row = (i / 2) % 2;
    s[i] = hopper_exp2(s[i] - m_use[row]);
    l[row] += s[i];
  }
}

/// out[T, Hq, D] = softmax(scale · q·kᵀ + causal mask) · v over each token's sequence in the
/// paged cache (which already holds this step's K/V rows). Same entry and grid as
/// flash_attention_prefill_pipelined with a 128-row Q tile: grid.x >= ceil(T * G / 128) + S blocks
/// (surplus ones exit), grid.y = KV heads, 384 threads (3 warpgroups).
template <class T, class C, int D, int G, int TILE_KV, int STAGES>
__device__ __forceinline__ void flash_attention_prefill_hopper(
    T* __restrict__ out, const T* __restrict__ q, const C* __restrict__ k_cache,
    const C* __restrict__ v_cache, const float* __restrict__ k_scales,
    const float* __restrict__ v_scales, const int* __restrict__ positions,
    const int* __restrict__ qo_indptr, const int* __restrict__ kv_page_indptr,
    const int* __restrict__ kv_page_indices, const int* __restrict__ kv_last_page_len, int num_seqs,
    int num_kv_heads, int page_size, float scale) {
  static_assert(sizeof(C) == sizeof(T), "the Hopper prefill kernel reads a 16-bit cache");
  static_assert(D == 64 || D == 128, "head_dim 64 or 128 (one or two 128-byte swizzle columns)");
  static_assert(TILE_KV == 64 || TILE_KV == 128, "wgmma n = TILE_KV for S");
  static_assert(STAGES >= 2, "the ring needs a tile in flight beside the one computed");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int TILE_Q = 128;
  constexpr int kPieces = D / 8;  // 16-byte pieces per row
  constexpr int kQBytes = TILE_Q * D * 2;
  constexpr int kTileBytes = TILE_KV * D * 2;
  extern __shared__ unsigned char smem_raw[];
  __shared__ int tile_max_pos, tile_min_pos;

  {
    u32 dyn;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dyn));
    if (dyn < (u32)hopper_prefill_smem_bytes<D, TILE_KV, STAGES>()) __trap();
  }
  const u32 raw = static_cast<u32>(__cvta_generic_to_shared(smem_raw));
  const u32 q_s = (raw + 1023u) & ~1023u;
  const u32 kv_s = q_s + kQBytes;  // stage i: K at kv_s + 2 * i * kTileBytes, V right after
  const u32 bars = kv_s + STAGES * 2 * kTileBytes;
  auto full_k = [&](int st) { return bars + 8u * st; };
  auto full_v = [&](int st) { return bars + 8u * (STAGES + st); };
  auto empty = [&](int st) { return bars + 8u * (2 * STAGES + st); };
  unsigned char* const smem = smem_raw + (q_s - raw);  // generic pointer to the Q tile

  const int kv_head = blockIdx.y;
  const int num_q_heads = num_kv_heads * G;
  const int tid = threadIdx.x;

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

  if (tid == 0) {
    tile_max_pos = -1;
    tile_min_pos = 0x7fffffff;
    for (int st = 0; st < STAGES; ++st) {
      mbar_init(full_k(st), 128);  // one cp.async arrival per producer thread
      mbar_init(full_v(st), 128);
      mbar_init(empty(st), 8);  // one arrival per consumer warp
    }
  }
  __syncthreads();
  if (tid < TILE_Q && row0 + tid < q_rows) {
    const int p = positions[q_begin + (row0 + tid) / G];
    atomicMax(&tile_max_pos, p);
    atomicMin(&tile_min_pos, p);
  }
  __syncthreads();
  // Causality bounds the KV loop: nothing past the tile's largest position is ever visible. Both
  // consumers run the same tiles (their ping-pong barriers pair up turn by turn).
  const int kv_end = min(kv_len, tile_max_pos + 1);
  const int num_tiles = (kv_end + TILE_KV - 1) / TILE_KV;
  const int min_pos = tile_min_pos;

  if (tid < 128) {
    // Producer: few registers (it only computes addresses), handing the rest to the consumers.
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    // Thread tid copies piece tid % kPieces of rows tid / kPieces + i * kRowStep.
    constexpr int kRowStep = 128 / kPieces;
    const int piece = tid % kPieces, r0 = tid / kPieces;
    for (int t = 0; t < num_tiles; ++t) {
      const int st = t % STAGES;
      // The stage's previous tile (t - STAGES) must have been read by both consumers.
      if (t >= STAGES) mbar_wait(empty(st), (t / STAGES - 1) & 1);
#pragma unroll
      for (int kv = 0; kv < 2; ++kv) {
        const C* cache = kv == 0 ? k_cache : v_cache;
        const u32 tile_s = kv_s + (2 * st + kv) * kTileBytes;
#pragma unroll 4
        for (int i = 0; i < TILE_KV / kRowStep; ++i) {
          const int r = r0 + i * kRowStep;
          const int j = t * TILE_KV + r;
          const bool valid = j < kv_len;  // rows past the end read as zeros (P·V stays finite)
          const C* src = cache;
          if (valid) {
            const int page = kv_page_indices[page_begin + j / page_size];
            src = cache +
                  ((long long)(page * (long long)page_size + j % page_size) * num_kv_heads +
                   kv_head) *
                      D +
                  piece * 8;
          }
          const u32 dst = tile_s + sw128_offset<TILE_KV>(r, piece);
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src),
                       "r"(valid ? 16 : 0)
                       : "memory");
        }
        mbar_arrive_cp_async(kv == 0 ? full_k(st) : full_v(st));
      }
    }
    cp_async_wait_all();
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
  const int wg = tid / 128 - 1;  // consumer 0 or 1: query rows 64 * wg .. 64 * wg + 63
  const int ctid = tid % 128, warp = ctid / 32, lane = tid % 32;
  const int turn_bar = 1 + wg, other_bar = 2 - wg;  // named barriers 1 and 2: the ping-pong

  // This warpgroup's 64 Q rows (rows past the sequence's last token read as zeros).
  {
    constexpr int kRowStep = 128 / kPieces;
    const int piece = ctid % kPieces;
#pragma unroll
    for (int i = 0; i < 64 / kRowStep; ++i) {
      const int r = 64 * wg + ctid / kPieces + i * kRowStep;
      const int qr = row0 + r;
      const bool valid = qr < q_rows;
      const T* src = q;
      if (valid) {
        src = q + ((long long)(q_begin + qr / G) * num_q_heads + kv_head * G + qr % G) * D +
              piece * 8;
      }
      const u32 dst = q_s + sw128_offset<TILE_Q>(r, piece);
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src),
                   "r"(valid ? 16 : 0)
                   : "memory");
    }
    cp_async_commit();
    cp_async_wait_all();
    fence_proxy_async();  // the wgmmas read these bytes through the async proxy
    named_sync<128>(3 + wg);
  }

  // This lane's two rows' positions (-1: a padding row, fully masked).
  int pos[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int qr = row0 + 64 * wg + 16 * warp + lane / 4 + 8 * h;
    pos[h] = qr < q_rows ? positions[q_begin + qr / G] : -1;
  }
  const float scale_log2 = scale * 1.4426950408889634f;

  float s[TILE_KV / 2];    // S of the current tile, then its exp2 (P) in f32
  float o[D / 2];          // unnormalized output
  u32 p[TILE_KV / 16][4];  // P of the previous tile, the A operand of P·V
  float m[2] = {neg_inf(), neg_inf()}, l[2] = {0.f, 0.f};
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;

  // Descriptors. Q (A) and K (B) are K-major: 8-row groups 1024 bytes apart (stride), the k step
  // of 16 elements (32 bytes) advances the start address inside the 128-byte swizzle row, and the
  // next 64 columns are the next [rows][64] block. V (B, N-major): 16 KV rows per k step (2048
  // bytes), 8-row groups 1024 bytes apart (stride), the next 64 d columns a block further
  // (leading).
  const u32 q_wg = q_s + 64 * wg * 128;
  auto issue_qk = [&](int st) {
    const u32 k_t = kv_s + 2 * st * kTileBytes;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const u32 koff = (kk % 4) * 32;  // 16 columns of the 64 in a swizzle row
      const u64 da = wgmma_desc(q_wg + (kk / 4) * TILE_Q * 128 + koff, 16, 1024);
      const u64 db = wgmma_desc(k_t + (kk / 4) * TILE_KV * 128 + koff, 16, 1024);
      wgmma_ss<T, TILE_KV>(s, da, db, kk > 0 ? 1 : 0);
    }
  };
  auto issue_pv = [&](int st) {
    const u32 v_t = kv_s + (2 * st + 1) * kTileBytes;
#pragma unroll
    for (int kt = 0; kt < TILE_KV / 16; ++kt) {
      wgmma_rs_tb<T, D>(o, p[kt], wgmma_desc(v_t + kt * 2048, TILE_KV * 128, 1024));
    }
  };
  auto pack_p = [&] {
#pragma unroll
    for (int kt = 0; kt < TILE_KV / 16; ++kt) {
      p[kt][0] = pack2<T>(s[8 * kt + 0], s[8 * kt + 1]);
      p[kt][1] = pack2<T>(s[8 * kt + 2], s[8 * kt + 3]);
      p[kt][2] = pack2<T>(s[8 * kt + 4], s[8 * kt + 5]);
      p[kt][3] = pack2<T>(s[8 * kt + 6], s[8 * kt + 7]);
    }
  };
  auto softmax = [&](int t, float(&rescale)[2]) {
    const int kv_base = t * TILE_KV;
    if (kv_base + TILE_KV - 1 > min_pos || kv_base + TILE_KV > kv_len) {
      hopper_softmax<TILE_KV, true>(s, m, l, rescale, kv_base, kv_len, pos, scale_log2);
    } else {
      hopper_softmax<TILE_KV, false>(s, m, l, rescale, kv_base, kv_len, pos, scale_log2);
    }
  };
  // Hands stage st back to the producer: this warp's wgmmas that read it have completed.
  auto release = [&](int st) {
    if (lane == 0) mbar_arrive(empty(st));
  };

  // Consumer 0 takes the first turn: consumer 1 pre-arrives on its barrier.
  if (wg == 1) named_arrive<256>(1);
  if (num_tiles > 0) {
    float rescale[2];
    mbar_wait(full_k(0), 0);
    fence_proxy_async();
    named_sync<256>(turn_bar);
    wgmma_fence();
    issue_qk(0);
    wgmma_commit();
    named_arrive<256>(other_bar);
    wgmma_wait<0>();
    fence_regs(s);
    softmax(0, rescale);
    pack_p();
    for (int t = 1; t < num_tiles; ++t) {
      const int st = t % STAGES, prev = (t - 1) % STAGES;
      mbar_wait(full_k(st), (t / STAGES) & 1);
      fence_proxy_async();
      named_sync<256>(turn_bar);
      fence_regs(o);
      wgmma_fence();
      issue_qk(st);
      wgmma_commit();
      mbar_wait(full_v(prev), ((t - 1) / STAGES) & 1);
      fence_proxy_async();
      issue_pv(prev);
      wgmma_commit();
      named_arrive<256>(other_bar);
      wgmma_wait<1>();  // S of tile t (the older group) is done; P·V of tile t-1 may still run
      fence_regs(s);
      softmax(t, rescale);
      wgmma_wait<0>();
      fence_regs(o);
      release(prev);
#pragma unroll
      for (int i = 0; i < D / 2; ++i) o[i] *= rescale[(i / 2) % 2];
      pack_p();
    }
    const int last = (num_tiles - 1) % STAGES;
    mbar_wait(full_v(last), ((num_tiles - 1) / STAGES) & 1);
    fence_proxy_async();
    named_sync<256>(turn_bar);
    fence_regs(o);
    wgmma_fence();
    issue_pv(last);
    wgmma_commit();
    named_arrive<256>(other_bar);
    wgmma_wait<0>();
    fence_regs(o);
    release(last);
  }
  // Consumer 1's last arrival on barrier 1 pairs with this wait, so no barrier is left half-full.
  if (wg == 0) named_sync<256>(1);

    // out[token, head, :] = o / l (zeros for a row that saw no key), staged through this
    // warpgroup's own 64 rows of the Q tile (only its wgmmas read them, and they are done).
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
  }
  named_sync<128>(3 + wg);
  {
    const float inv_l[2] = {l[0] > 0.f ? 1.f / l[0] : 0.f, l[1] > 0.f ? 1.f / l[1] : 0.f};
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = 64 * wg + 16 * warp + lane / 4 + 8 * h;
        *reinterpret_cast<u32*>(smem + sw128_offset<TILE_Q>(r, dt) + 4 * (lane % 4)) =
            pack2<T>(o[4 * dt + 2 * h] * inv_l[h], o[4 * dt + 2 * h + 1] * inv_l[h]);
      }
    }
  }
  named_sync<128>(3 + wg);
#pragma unroll
  for (int i = ctid; i < 64 * kPieces; i += 128) {
    const int row = 64 * wg + i / kPieces, piece = i % kPieces;
    const int qr = row0 + row;
    if (qr >= q_rows) continue;
    T* dst = out + ((long long)(q_begin + qr / G) * num_q_heads + kv_head * G + qr % G) * D;
    *reinterpret_cast<HopperVec16*>(dst + piece * 8) =
        *reinterpret_cast<const HopperVec16*>(smem + sw128_offset<TILE_Q>(row, piece));
  }
#else
  __trap();  // wgmma and setmaxnreg exist on sm_90a only; codegen selects this kernel there
#endif
}

}  // namespace kiln_k
