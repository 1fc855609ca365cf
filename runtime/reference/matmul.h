// matmul for the CPU reference backend: y[M, N] = x[M, K] · w[N, K]ᵀ with f32 activations and
// f32 / bf16 / f16 weights widened on the fly, or ggml block-quantized weights (Q8_0 / Q4_0 / Q4_1
// read block-wise in place, Q4_K / Q6_K dequantized a panel of rows at a time), vectorized
// (AVX-512 / AVX2+FMA+F16C, chosen at run time, with a portable fallback) and threaded over
// columns (small M) or rows (large M).
#pragma once

#include <cstdint>

#include "ir/dtype.h"

namespace kiln {

class ThreadPool;

/// Instruction-set variants of the kernel; kAuto picks the best the CPU supports.
enum class MatmulIsa { kAuto, kGeneric, kAvx2, kAvx512 };

/// Whether this CPU (and this build) can run `isa`.
bool matmul_isa_supported(MatmulIsa isa);
/// Name for logs and benchmark labels ("avx512").
const char* matmul_isa_name(MatmulIsa isa);

/// A weight matrix [n, k], row-major, not owned. dtype: f32, bf16, f16, or a GGUF block type
/// (q8_0, q4_0, q4_1, q4_k, q6_k) with k a multiple of its block_elements.
struct WeightRef {
  DType dtype = DType::kF32;
  const void* data = nullptr;
  int64_t n = 0;
  int64_t k = 0;
};

/// y[m, w.n] = x[m, w.k] · wᵀ (x and y row-major, contiguous). `pool` may be null (one thread).
/// The caller guarantees w.dtype is one of WeightRef's and k fits its blocks.
/// `quantize_activations`: for Q8_0 / Q4_0 / Q4_1 weights at decode row counts, round x to 8-bit
/// codes per 32 values (as llama.cpp does) and multiply integer codes; faster, not exact.
void matmul(const float* x, int64_t m, const WeightRef& w, float* y, ThreadPool* pool,
            MatmulIsa isa = MatmulIsa::kAuto, bool quantize_activations = false);

/// Widens `count` elements of a f32/bf16/f16 array starting at element `offset` into `out`; for a
/// block type, `offset` and `count` must be whole blocks.
void widen_to_f32(DType dtype, const void* data, int64_t offset, int64_t count, float* out);

}  // namespace kiln
