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
  kConstant,    // () {value, dtype} -> dtype[]  a scalar
  kRopeTable,   // () {part, theta, rotary_dim, max_positions, layout[, scaling_*]} -> f32[max_positions, rotary_dim]
  kGather,      // (table[N, ...], idx i32[T]) -> [T, ...]   row gather (embedding, cos/sin by position)
  kReshape,     // (x) {shape} -> x reshaped; shape entry 0 copies the input dim at that index
  kSlice,       // (x) {axis, start, end} -> x[..., start:end, ...]
  kConcat,      // (x0, x1, ...) {axis} -> concatenation
  kLastTokenRows,  // (x[T, H], qo_indptr i32[S+1]) -> [S, H]  each sequence's last token row
  // --- primitive: compute
  kMatmul,      // (x[..., K], w[N, K]) -> [..., N]   x·wᵀ
  kAdd,         // binary elementwise ops broadcast numpy-style; both operands have one dtype
  kSub,
  kMul,
  kDiv,
  kNeg,         // unary elementwise
  kExp,
  kRsqrt,
  kSilu,
  kCast,        // (x) {dtype}
  kReduceSum,   // reductions over the last axis, keeping it as size 1
  kReduceMean,
  kReduceMax,
  // --- primitive: paged attention pieces
  kKvWrite,     // (cache[NP, PS, Hkv, D], rows[T, Hkv, D], slot_mapping i32[T]) -> cache (in place)
  kPagedQk,     // (q[T, Hq, D], k_cache, qo_indptr, kv_page_indptr, kv_page_indices, kv_last_page_len) {kv_dim}
                //   -> f32[T, Hq, K]  q·k per KV position of the token's sequence (GQA: head h reads h/(Hq/Hkv))
  kCausalMask,  // (scores[T, H, K], positions i32[T]) -> scores with -inf where kv position > token position
  kPagedPv,     // (p f32[T, Hq, K], v_cache, qo_indptr, kv_page_indptr, kv_page_indices, kv_last_page_len)
                //   -> [T, Hq, D] in v_cache's dtype
  // --- fused (created by passes only)
  kRmsNorm,          // (x[..., H], w[H]) {eps} -> x / rms(x) * w
  kRmsNormResidual,  // (x, residual, w[H]) {eps} -> (rmsnorm(x + residual) * w, x + residual)
  kRope,             // (x[T, Hh, D], positions i32[T]) {theta, rotary_dim, layout[, scaling_*]} -> x rotated
  kFlashAttention,   // (q[T,Hq,D], k[T,Hkv,D], v[T,Hkv,D], k_cache, v_cache, positions, slot_mapping,
                     //  qo_indptr, kv_page_indptr, kv_page_indices, kv_last_page_len) {scale}
                     //   -> (out[T, Hq, D], k_cache, v_cache): writes k/v rows, then causal attention
  kFusedElementwise, // (x0, x1, ...) {expr, dtype} -> broadcast shape; expr over $0, $1, ... (see ir/expr.h)
  kGemm,             // (x[..., K], w[N, K][, bias[N]][, residual[..., N]]) {epilogue} -> [..., N]
};

inline constexpr int kNumOpKinds = static_cast<int>(OpKind::kGemm) + 1;

/// Group traits of an op kind.
struct OpTraits {
  bool elementwise = false;  // output element i depends only on input elements i (after broadcast)
  bool reduction = false;    // reduces over the last axis
  bool fused = false;        // created by a pass; never emitted by models/
  bool side_effect = false;  // writes memory beyond its outputs (KV cache); never dead-code eliminated
  bool view = false;         // changes only how data is indexed (reshape, slice)
  int num_inputs = -1;       // fixed input count, or -1 for variadic / optional inputs
  int num_outputs = 1;
};

const std::string& op_name(OpKind kind);  // "rmsnorm_residual"
std::optional<OpKind> parse_op_name(std::string_view name);
OpTraits op_traits(OpKind kind);

}  // namespace kiln
