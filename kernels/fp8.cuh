// The fp8e4m3 KV cache on the GPU: e4m3 codes (OCP FP8 E4M3 "fn": bias 7, 3 mantissa bits, no
// infinities, max 448) with one f32 scale per (slot, KV head). The KV append quantizes each row
// (kv_append_fp8 / rope_kv_append in rope.cuh); the attention kernels dequantize K/V tiles after
// they land in shared memory (dequantize_tile) into the 16-bit type of their mma path.
//
// The arithmetic is the CPU reference's (runtime/reference/attention.cc, quantize_row_fp8e4m3):
// scale = amax / 448 and codes = e4m3(x * (448 / amax)), round to nearest even, saturating, in
// the same f32 operations, so both backends store the same bytes for the same row.
#pragma once

#include "common.cuh"

namespace kiln_k {

/// One e4m3 code (storage only, as bf16 / f16 are).
struct fp8e4m3 {
  unsigned char bits;
};

/// The largest finite e4m3 value.
constexpr float kFp8E4M3Max = 448.f;

/// float -> e4m3 in software, rounding as the hardware's cvt.rn.satfinite does: to nearest even
/// (into the subnormals too), ±448 for anything beyond, 0x7f for NaN. For targets without FP8
/// conversions (sm_80); the GPU tests compare it with the hardware on every code boundary.
__device__ __forceinline__ u32 fp8_encode_soft(float x) {
  const u32 sign = (__float_as_uint(x) >> 24) & 0x80u;
  const float a = fabsf(x);
  if (a != a) return 0x7fu;                   // NaN
  if (a >= kFp8E4M3Max) return sign | 0x7eu;  // satfinite (infinities too)
  // Below 2^-6 the steps are 2^-9 (subnormals, and 8 * 2^-9 is the smallest normal's code).
  if (a < 0.015625f) return sign | static_cast<u32>(__float2int_rn(a * 512.f));
  // Round the f32 mantissa to its top 3 bits, ties to even; a carry moves into the exponent.
  u32 m = __float_as_uint(a);
  m += 0x7ffffu + ((m >> 20) & 1u);
  const u32 code = (((m >> 23) - 127u + 7u) << 3) | ((m >> 20) & 7u);
  return sign | (code < 0x7eu ? code : 0x7eu);
}

/// 4-byte global->shared copy (cp.async.ca: 4-byte copies only go through L1); `valid == false`
/// zero-fills, as cp_async_16 does. For the per-row scales of an fp8e4m3 tile.
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, bool valid) {
  u32 dst = static_cast<u32>(__cvta_generic_to_shared(smem));
  int src_bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(gmem),
               "r"(src_bytes));
}

/// Two floats -> two e4m3 codes, `lo` in the low byte.
__device__ __forceinline__ u32 fp8x2_encode(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  unsigned short r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return fp8_encode_soft(lo) | (fp8_encode_soft(hi) << 8);
#endif
}

/// Two e4m3 codes (the low 16 bits of `codes`, the first in the low byte) as an f16 pair, exactly:
/// e4m3's sign, exponent and mantissa bits placed into f16's give the value times 2^-8 (the
/// exponent biases differ by 8), normals and subnormals alike; the caller multiplies by 2^8 (folded
/// into the scale). Integer ops only, so every target takes this one path.
__device__ __forceinline__ u32 fp8x2_to_f16x2_times_2m8(u32 codes) {
  return ((codes & 0x80u) << 8) | ((codes & 0x7fu) << 7) | ((codes & 0x8000u) << 16) |
         ((codes & 0x7f00u) << 15);
}

/// Four codes (one u32, the first in the low byte) dequantized with `scale` into four values of T.
template <class T>
__device__ __forceinline__ void dequantize4(u32 codes, float scale, T* out) {
  const float s = scale * 256.f;  // undoes fp8x2_to_f16x2_times_2m8's 2^-8 (exact)
  const u32 lo = fp8x2_to_f16x2_times_2m8(codes & 0xffffu);
  const u32 hi = fp8x2_to_f16x2_times_2m8(codes >> 16);
  u32* o = reinterpret_cast<u32*>(out);
  o[0] = pack2<T>(to_float(f16{static_cast<u16>(lo & 0xffffu)}) * s,
                  to_float(f16{static_cast<u16>(lo >> 16)}) * s);
  o[1] = pack2<T>(to_float(f16{static_cast<u16>(hi & 0xffffu)}) * s,
                  to_float(f16{static_cast<u16>(hi >> 16)}) * s);
}

/// 16 bytes: 16 e4m3 codes, or 8 16-bit values.
struct __align__(16) Bytes16 {
  u32 w[4];
};

/// 16 codes with one scale -> 16 values of T at `out` (16-byte aligned: two 16-byte stores).
template <class T>
__device__ __forceinline__ void dequantize16(const Bytes16& codes, float scale, T* out) {
  Bytes16 h0, h1;
  dequantize4<T>(codes.w[0], scale, reinterpret_cast<T*>(&h0.w[0]));
  dequantize4<T>(codes.w[1], scale, reinterpret_cast<T*>(&h0.w[2]));
  dequantize4<T>(codes.w[2], scale, reinterpret_cast<T*>(&h1.w[0]));
  dequantize4<T>(codes.w[3], scale, reinterpret_cast<T*>(&h1.w[2]));
  reinterpret_cast<Bytes16*>(out)[0] = h0;
  reinterpret_cast<Bytes16*>(out)[1] = h1;
}

/// Dequantizes a tile of ROWS rows x D codes (`codes`, row stride D bytes, in shared memory) with
/// one scale per row (`scales[ROWS]`) into `out` (row stride D + 8 elements of T: TileStride<D>),
/// the layout the mma path reads; THREADS threads cooperate, thread `tid` of them.
template <class T, int D, int ROWS, int THREADS>
__device__ __forceinline__ void dequantize_tile(T* out, const unsigned char* codes,
                                                const float* scales, int tid) {
  static_assert(D % 16 == 0, "16 codes per step");
  constexpr int kS = D + 8;
  constexpr int kPieces = D / 16;
#pragma unroll
  for (int i = tid; i < ROWS * kPieces; i += THREADS) {
    const int row = i / kPieces, piece = i % kPieces;
    dequantize16<T>(*reinterpret_cast<const Bytes16*>(codes + row * D + piece * 16), scales[row],
                    out + row * kS + piece * 16);
  }
}

/// Quantizes one KV row spread over a warp: each lane holds values x[N] (any split of the row;
/// elements a lane does not hold are 0, which moves no maximum) and gets their codes; every lane
/// returns the row's scale amax / 448 (0 for an all-zero row, whose codes are then 0).
template <int N>
__device__ __forceinline__ float quantize_warp_row(const float (&x)[N], u32 (&codes)[N]) {
  float amax = 0.f;
#pragma unroll
  for (int i = 0; i < N; ++i) amax = fmaxf(amax, fabsf(x[i]));
  amax = warp_max(amax);
  // IEEE division (not the approximate one fast-math may pick), as the reference divides.
  const float inv = amax > 0.f ? __fdiv_rn(kFp8E4M3Max, amax) : 0.f;
#pragma unroll
  for (int i = 0; i + 1 < N; i += 2) {
    const u32 c = fp8x2_encode(__fmul_rn(x[i], inv), __fmul_rn(x[i + 1], inv));
    codes[i] = c & 0xffu;
    codes[i + 1] = c >> 8;
  }
  if (N % 2 != 0) codes[N - 1] = fp8x2_encode(__fmul_rn(x[N - 1], inv), 0.f) & 0xffu;
  return amax > 0.f ? __fdiv_rn(amax, kFp8E4M3Max) : 0.f;
}

}  // namespace kiln_k
