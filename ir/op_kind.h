// The op set of kiln's graph IR: primitive ops (what models/ emits) and fused ops (what passes/
// creates), with group traits. Every op has CPU reference semantics in runtime/reference.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kiln {

// Shapes below use T = tokens of the step, S = sequences, P = pages referenced by the step,
// NP = pages in the pool, PS = page size, K = longest KV length of the step, H* = heads,
// D = head_dim. "x·wᵀ" means weights are stored [out_features, in_features] as in HF checkpoints.
enum class OpKind : uint8_t {
  // --- primitive: sources and data movement
  /// () {value, dtype} -> dtype[]: a scalar.
  kConstant,
  /// () {part = "cos"|"sin", theta, rotary_dim, max_positions, layout[, scaling_*]}
  ///   -> f32[max_positions, rotary_dim]: the rotary table (see ir/rope.h).
  kRopeTable,
  /// (table[N, ...], idx i32[T]) -> [T, ...]: row gather (embedding, cos/sin by position).
  kGather,
  /// (x) {shape} -> x reshaped; a shape entry 0 copies the input dim at that index.
  kReshape,
  /// (x) {axis, start, end} -> x[..., start:end, ...].
  kSlice,
  /// (x0, x1, ...) {axis} -> their concatenation.
  kConcat,
  /// (x[T, H], qo_indptr i32[S+1]) -> [S, H]: each sequence's last token row.
  kLastTokenRows,
  // --- primitive: compute
  /// (x[..., K], w[N, K]) -> [..., N]: x·wᵀ.
  kMatmul,
  /// Binary elementwise ops broadcast numpy-style; both operands have one dtype.
  kAdd,
  kSub,
  kMul,
  kDiv,
  /// Unary elementwise ops.
  kNeg,
  kExp,
  kRsqrt,
  kSilu,
  /// (x) {dtype}.
  kCast,
  /// Reductions over the last axis, keeping it as size 1.
  kReduceSum,
  kReduceMean,
  kReduceMax,
  // --- primitive: paged attention pieces
  // A KV cache of dtype fp8e4m3 is e4m3 codes with one f32 scale per (slot, KV head), kept in a
  // scale array scales[NP, PS, Hkv] with the cache's page structure: the value of element
  // (slot, h, i) is code * scales[slot, h]. Every op that reads or writes such a cache takes its
  // scale array as a trailing operand (and kv_write / flash_attention return it written).
  /// (cache[NP, PS, Hkv, D], rows[T, Hkv, D], slot_mapping i32[T][, scales f32[NP, PS, Hkv]])
  ///   -> cache[, scales], written in place. With an fp8e4m3 cache each row (token, KV head) gets
  ///   scale = max|row| / 448 and codes e4m3(row / scale) (round to nearest even, saturating).
  kKvWrite,
  /// (q[T, Hq, D], k_cache, qo_indptr, kv_page_indptr, kv_page_indices, kv_last_page_len
  /// [, k_scales]) {kv_dim} -> f32[T, Hq, K]: q·k per KV position of the token's sequence (GQA:
  /// head h reads KV head h / (Hq / Hkv)).
  kPagedQk,
  /// (scores[T, H, K], positions i32[T]) -> scores with -inf where kv position > token position.
  kCausalMask,
  /// (p f32[T, Hq, K], v_cache, qo_indptr, kv_page_indptr, kv_page_indices, kv_last_page_len
  /// [, v_scales]) [{dtype}] -> [T, Hq, D] in v_cache's dtype, or in `dtype` (required for an
  /// fp8e4m3 cache, whose dequantized values are no e4m3 tensor).
  kPagedPv,
  // --- fused (created by passes only)
  /// (x[..., H], w[H]) {eps} -> x / rms(x) * w.
  kRmsNorm,
  /// (x, residual, w[H]) {eps} -> (rmsnorm(x + residual) * w, x + residual).
  kRmsNormResidual,
  /// (x[T, Hh, D], positions i32[T]) {theta, rotary_dim, layout[, scaling_*]} -> x rotated.
  kRope,
  /// (q[T,Hq,D], k[T,Hkv,D], v[T,Hkv,D], k_cache, v_cache, positions, slot_mapping, qo_indptr,
  /// kv_page_indptr, kv_page_indices, kv_last_page_len[, k_scales, v_scales]) {scale} ->
  /// (out[T, Hq, D], k_cache, v_cache[, k_scales, v_scales]): writes the k/v rows (as kv_write),
  /// then causal attention over each sequence's pages.
  kFlashAttention,
  /// (x0, x1, ...) {expr, dtype} -> the broadcast shape; expr over $0, $1, ... (ir/expr.h).
  kFusedElementwise,
  /// (x[..., K], w[N, K][, bias[N]][, residual[..., N]]) {epilogue} -> [..., N].
  kGemm,
  // --- collectives (created by shard-tensor-parallel). A graph with `ranks N` is one program
  // that N tensor-parallel ranks each run on their own weight slices (SPMD); a collective is where
  // they meet, and every rank takes part in each one in program order.
  /// (x) {ranks} -> x summed element-wise over the `ranks` ranks; every rank gets the sum (the
  /// partial products of a row-parallel matmul become the full product).
  kAllReduce,
  /// (x[..., n, ...]) {axis, ranks} -> [..., ranks*n, ...]: the ranks' x concatenated along
  /// `axis` in rank order, on every rank (the vocabulary-split logits become whole).
  kAllGather,
};

inline constexpr int kNumOpKinds = static_cast<int>(OpKind::kAllGather) + 1;

/// Group traits of an op kind.
struct OpTraits {
  /// Output element i depends only on input elements i (after broadcasting).
  bool elementwise = false;
  /// Reduces over the last axis.
  bool reduction = false;
  /// Created by a pass; never emitted by models/.
  bool fused = false;
  /// Writes memory beyond its results (the KV cache), so it is never dead-code eliminated.
  bool side_effect = false;
  /// Changes only how data is indexed (reshape, slice).
  bool view = false;
  /// Exchanges data between the tensor-parallel ranks (all_reduce, all_gather).
  bool collective = false;
  /// Fixed input count, or -1 for variadic / optional inputs.
  int num_inputs = -1;
  /// Fixed result count, or -1 when it depends on the inputs (type inference says how many: the
  /// KV writes return their scale arrays too for fp8e4m3 caches).
  int num_outputs = 1;
};

const std::string& op_name(OpKind kind);  // "rmsnorm_residual"
std::optional<OpKind> parse_op_name(std::string_view name);
OpTraits op_traits(OpKind kind);

}  // namespace kiln
