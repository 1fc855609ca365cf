// Helpers every kiln kernel family includes: 16-bit float types and conversions, warp/block
// reductions, and the m16n8k16 tensor-core mma through inline PTX.
//
// Deliberately self-contained (no <cuda_bf16.h>/<cuda_fp16.h>): NVRTC then parses a few hundred
// lines instead of tens of thousands, which keeps `kiln compile` fast, and needs no toolkit include
// directory on the machine that compiles.
#pragma once

namespace kiln_k {

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

/// Storage-only 16-bit floats; all arithmetic happens in fp32.
struct bf16 {
  u16 bits;
};
struct f16 {
  u16 bits;
};

/// -inf without <math.h> (NVRTC compiles no headers here).
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// Where a block is in its launch. A kernel family reads its coordinates through these, never
// blockIdx / gridDim directly, and synchronizes its threads with block_sync<its thread count>(),
// so that the persistent decode kernel (kernels/persistent_decode.cuh) can run any of its blocks
// as a task: there one resident block of PERSISTENT threads takes the tasks of many launches in
// turn, each with its launch's coordinates, and a launch of fewer threads runs on the block's
// first warps (a named barrier counts only those).
#ifdef KILN_PERSISTENT
/// The current task's launch coordinates, written by the task loop before the task runs.
__shared__ uint3 kiln_task_block;
__shared__ uint3 kiln_task_grid;
__device__ __forceinline__ uint3 task_block() { return kiln_task_block; }
__device__ __forceinline__ uint3 task_grid() { return kiln_task_grid; }
/// Barrier 1 over the first THREADS threads (barrier 0, __syncthreads, is the task loop's).
template <int THREADS>
__device__ __forceinline__ void block_sync() {
  static_assert(THREADS % 32 == 0, "a named barrier counts whole warps");
  asm volatile("bar.sync 1, %0;" ::"n"(THREADS) : "memory");
}
#else
__device__ __forceinline__ uint3 task_block() { return blockIdx; }
__device__ __forceinline__ uint3 task_grid() {
  uint3 g;
  g.x = gridDim.x, g.y = gridDim.y, g.z = gridDim.z;
  return g;
}
template <int THREADS>
__device__ __forceinline__ void block_sync() {
  __syncthreads();
}
#endif

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __uint_as_float(u32(x.bits) << 16); }
__device__ __forceinline__ float to_float(f16 x) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
  return f;
}

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float x) {
  u16 h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x));  // round to nearest even, as torch does
  return bf16{h};
}
template <>
__device__ __forceinline__ f16 from_float<f16>(float x) {
  u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
  return f16{h};
}

/// Two fp32 values packed as a 16-bit pair (lo in the low half), the mma operand format.
template <class T>
__device__ __forceinline__ u32 pack2(float lo, float hi);
template <>
__device__ __forceinline__ u32 pack2<bf16>(float lo, float hi) {
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
template <>
__device__ __forceinline__ u32 pack2<f16>(float lo, float hi) {
  u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

/// D += A·B for one m16n8k16 tile (A row-major 16x16, B column-major 16x8, fp32 accumulators),
/// the Ampere/Hopper warp-level tensor-core instruction FlashAttention-2 builds on.
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1);
template <>
__device__ __forceinline__ void mma_16816<bf16>(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<f16>(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// 16-byte global->shared copy that bypasses registers (cp.async, sm_80+); `valid == false`
/// zero-fills the destination, so tails past a sequence's last KV row read as zeros.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  u32 dst = static_cast<u32>(__cvta_generic_to_shared(smem));
  int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;" ::: "memory");
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// Sum over the block; every thread gets the result. `scratch` holds one float per warp.
template <int THREADS>
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  constexpr int kWarps = THREADS / 32;
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) total += scratch[w];
  __syncthreads();
  return total;
}
template <int THREADS>
__device__ __forceinline__ float block_max(float v, float* scratch) {
  constexpr int kWarps = THREADS / 32;
  v = warp_max(v);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float m = neg_inf();
#pragma unroll
  for (int w = 0; w < kWarps; ++w) m = fmaxf(m, scratch[w]);
  __syncthreads();
  return m;
}

}  // namespace kiln_k
