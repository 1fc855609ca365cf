// The op kernels of the CPU reference backend, on resolved fp32/int32 views. The executor
// (runtime/reference/executor.h) validates bindings, allocates results and calls these; errors
// name the offending index or entry and the executor prefixes the op.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ir/attributes.h"
#include "ir/expr.h"
#include "ir/op_kind.h"
#include "runtime/reference/host_tensor.h"

namespace kiln {

class ThreadPool;

/// A read-only view of 4-byte elements (fp32 data or int32 indices) with a resolved shape.
template <typename T>
struct View {
  const T* data = nullptr;
  std::vector<int64_t> shape;
  int64_t numel() const { return num_elements(shape); }
};
using FView = View<float>;
using IView = View<int32_t>;

// --- elementwise (reference_elementwise.cc)
/// out = a (op) b with numpy broadcasting to out_shape; op is add, sub, mul or div.
void binary_op(OpKind op, const FView& a, const FView& b, const std::vector<int64_t>& out_shape,
               float* out);
/// out = op(x) for neg, exp, rsqrt, silu.
void unary_op(OpKind op, const float* x, int64_t n, float* out);
/// Reduction over the last axis (reduce_sum, reduce_mean, reduce_max); out has numel/last elems.
void reduce_last(OpKind op, const FView& x, float* out);
/// fused_elementwise: evaluates `expr` over broadcast inputs; large ones split over `pool`'s
/// threads by rows (pool may be null).
void fused_elementwise(const Expr& expr, const std::vector<FView>& xs,
                       const std::vector<int64_t>& out_shape, float* out,
                       ThreadPool* pool = nullptr);
/// out = x · rsqrt(mean(x²) + eps) · w over the last axis. `sum_out` (optional, for
/// rmsnorm_residual): x is first replaced by x + residual, which is also written to sum_out.
/// Many rows are split over `pool`'s threads (pool may be null).
void rmsnorm(const FView& x, const float* residual, const float* w, double eps, float* out,
             float* sum_out, ThreadPool* pool = nullptr);

// --- data movement and rotary (reference_data_movement.cc)
/// Row gather: out[t] = table[idx[t]] for a table of `rows` rows of `row_elems` 4-byte elements.
/// A bf16/f16 or GGUF block table (a param) has each row widened instead of copied.
absl::Status gather_rows(const void* table, DType table_dtype, int64_t rows, int64_t row_elems,
                         const IView& idx, void* out);
/// Slice along `axis` of 4-byte elements.
void slice(const void* x, const std::vector<int64_t>& shape, int axis, int64_t start, int64_t end,
           void* out);
/// Concatenation along `axis` of 4-byte elements.
void concat(const std::vector<const void*>& xs, const std::vector<std::vector<int64_t>>& shapes,
            int axis, void* out);
/// Row qo_indptr[s+1]-1 of x[T, H] for each sequence s.
absl::Status last_token_rows(const FView& x, const IView& qo_indptr, float* out);
/// rope_table: [max_positions, rotary_dim] cos or sin table (see ir/op_kind.h, ir/rope.h).
absl::Status rope_table(const Attributes& attrs, float* out);
/// Fused rope over x[T, H, D]: rotates the first rotary_dim dims of every head. Many tokens are
/// split over `pool`'s threads (pool may be null).
absl::Status rope(const FView& x, const IView& positions, const Attributes& attrs, float* out,
                  ThreadPool* pool = nullptr);

// --- paged attention (reference_attention.cc)
/// Validated CSR page metadata of one step (FlashInfer layout).
struct PagedBatch {
  int64_t num_seqs = 0;
  int64_t page_size = 0;
  std::vector<int32_t> seq_of_token;  // [T]
  std::vector<int64_t> kv_len;        // [S]: (pages - 1) * PS + last_page_len
  std::vector<int32_t> page_indptr;   // [S+1]
  std::vector<int32_t> page_indices;  // [P]
  int64_t max_kv_len = 0;
  /// Flat cache row (page * PS + offset) of KV position j of sequence s (j < kv_len[s]).
  int64_t row(int64_t s, int64_t j) const {
    return static_cast<int64_t>(page_indices[page_indptr[s] + j / page_size]) * page_size +
           j % page_size;
  }
};
/// Checks qo_indptr[S+1] (0 .. T, non-decreasing), kv_page_indptr[S+1] (0 .. P, non-decreasing),
/// page indices in [0, num_pool_pages), last_page_len in [1, PS] (0 for a sequence without pages),
/// and that every sequence with query tokens has KV (so no softmax row is entirely masked).
absl::StatusOr<PagedBatch> make_paged_batch(const IView& qo_indptr, const IView& kv_page_indptr,
                                            const IView& kv_page_indices,
                                            const IView& kv_last_page_len, int64_t num_tokens,
                                            int64_t num_pool_pages, int64_t page_size);
/// Writes rows[t] into cache row slot_mapping[t] (flat over NP*PS); negative slots are skipped.
/// A cache with scales (fp8e4m3) stores each (token, KV head) row x quantized:
/// quantize_row_fp8e4m3.
absl::Status kv_write(const KvCacheView& cache, const FView& rows, const IView& slot_mapping);
/// One row x[n] into an fp8e4m3 cache: returns scale = max|x| / 448 (0 for an all-zero row) and
/// writes codes[i] = e4m3(x[i] * (448 / max|x|)) as their float values, so x[i] ≈ codes[i] *
/// scale. The same f32 operations as the GPU's KV append (kernels/fp8.cuh), so both store the
/// same codes and scale for the same row.
float quantize_row_fp8e4m3(const float* x, int64_t n, float* codes);
/// scores[t, h, j] = q[t, h]·k[j, h / group] for j < kv_len(seq(t)), -inf for kv_len <= j < K.
void paged_qk(const FView& q, const KvCacheView& cache, const PagedBatch& batch, int64_t kv_dim,
              float* out, ThreadPool* pool);
/// -inf where j > positions[t]. A negative position would mask its whole row (NaN after softmax),
/// so it is an error.
absl::Status causal_mask(const FView& scores, const IView& positions, float* out);
/// out[t, h] = Σ_{j < kv_len} p[t, h, j] · v[j, h / group].
void paged_pv(const FView& p, const KvCacheView& cache, const PagedBatch& batch, float* out,
              ThreadPool* pool);
/// kv_write of k and v, then causal softmax(scale · q·kᵀ)·v per token with an online softmax.
/// A token with no visible key gets 0; that cannot happen with metadata make_paged_batch accepts
/// and non-negative positions (checked: a negative position is an error, as in causal_mask).
absl::Status flash_attention(const FView& q, const FView& k, const FView& v,
                             const KvCacheView& k_cache, const KvCacheView& v_cache,
                             const IView& positions, const IView& slot_mapping,
                             const PagedBatch& batch, double scale, float* out, ThreadPool* pool);

}  // namespace kiln
