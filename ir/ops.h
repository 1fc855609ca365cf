// Named operand accessors for the ops with many operands (in the spirit of MLIR's generated op
// classes): `FlashAttentionOp attn(node); attn.q(), attn.k_cache(), attn.pages().kv_page_indices`.
// Each class's `Operand` enum is the one definition of that op's operand order; type inference,
// the passes that build these ops and every reader use it instead of positions.
#pragma once

#include <array>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"

namespace kiln {

/// The CSR page table of one step that paged_qk, paged_pv and flash_attention read: qo_indptr
/// i32[S+1], kv_page_indptr i32[S+1], kv_page_indices i32[P], kv_last_page_len i32[S], always
/// four consecutive operands in this order.
struct PageTableOperands {
  static constexpr int kCount = 4;
  Value* qo_indptr = nullptr;
  Value* kv_page_indptr = nullptr;
  Value* kv_page_indices = nullptr;
  Value* kv_last_page_len = nullptr;

  std::array<Value*, kCount> list() const {
    return {qo_indptr, kv_page_indptr, kv_page_indices, kv_last_page_len};
  }
  bool operator==(const PageTableOperands&) const = default;
};

/// The page table operands of a paged_qk, paged_pv or flash_attention node; nullopt for any other
/// node (or one with too few operands, e.g. unverified IR).
std::optional<PageTableOperands> page_table_of(const Node& node);

/// Common base of the op views: the node, its kind, and checked construction. `NumScales`: the
/// KV-cache ops take one scale array per fp8e4m3 cache as trailing operands (and, when they write
/// the cache, return it updated as trailing results); a node has all of them or none.
template <OpKind K, int NumOperands, int NumScales = 0>
class OpView {
 public:
  static constexpr OpKind kKind = K;
  static constexpr int kNumOperands = NumOperands;
  static constexpr int kNumScales = NumScales;

  const Node& node() const { return *node_; }
  Value* operand(int i) const { return node_->inputs[i]; }
  /// Whether the node carries its caches' scale arrays (its caches are fp8e4m3).
  bool has_scales() const {
    return NumScales > 0 && static_cast<int>(node_->inputs.size()) == NumOperands + NumScales;
  }

  /// True when `node` has this kind and this op's operand count (with or without the scale
  /// operands), so every accessor is in range.
  static bool matches(const Node* node) {
    if (node == nullptr || node->op != K) return false;
    const int n = static_cast<int>(node->inputs.size());
    return n == NumOperands || (NumScales > 0 && n == NumOperands + NumScales);
  }

 protected:
  /// `node` must satisfy matches() (verified IR, or a node the caller checked).
  explicit OpView(const Node& node) : node_(&node) {}
  Value* result(int i) const { return node_->outputs[i]; }

 private:
  const Node* node_;
};

/// Builds the view `V` of `node` when it matches, else nullopt (MLIR's dyn_cast).
template <class V>
std::optional<V> op_view(const Node* node) {
  if (!V::matches(node)) return std::nullopt;
  return V(*node);
}

/// kv_write(cache[NP, PS, Hkv, D], rows[T, Hkv, D], slot_mapping i32[T][, scales f32[NP, PS,
/// Hkv]]) -> cache[, scales] written in place. An fp8e4m3 cache takes its scale array (and
/// returns it written): each row is stored as e4m3 codes of rows / scale, scale = amax / 448.
class KvWriteOp : public OpView<OpKind::kKvWrite, 3, 1> {
 public:
  enum Operand { kCache, kRows, kSlotMapping, kScales };
  enum Result { kCacheOut, kScalesOut };
  explicit KvWriteOp(const Node& node) : OpView(node) {}
  Value* cache() const { return operand(kCache); }
  Value* rows() const { return operand(kRows); }
  Value* slot_mapping() const { return operand(kSlotMapping); }
  /// The cache's scale array; null for a cache without one (not fp8e4m3).
  Value* scales() const { return has_scales() ? operand(kScales) : nullptr; }
  Value* cache_out() const { return result(kCacheOut); }
  Value* scales_out() const {
    return has_scales() && node().outputs.size() > kScalesOut ? result(kScalesOut) : nullptr;
  }

  /// The operand list; `scales` null for a cache without scales.
  static std::vector<Value*> operands(Value* cache, Value* rows, Value* slot_mapping,
                                      Value* scales = nullptr) {
    std::vector<Value*> out = {cache, rows, slot_mapping};
    if (scales != nullptr) out.push_back(scales);
    return out;
  }
};

/// paged_qk(q[T, Hq, D], k_cache, page table...[, k_scales]) {kv_dim} -> f32[T, Hq, K].
class PagedQkOp : public OpView<OpKind::kPagedQk, 6, 1> {
 public:
  enum Operand { kQ, kKCache, kPageTable, kKScales = kPageTable + PageTableOperands::kCount };
  explicit PagedQkOp(const Node& node) : OpView(node) {}
  Value* q() const { return operand(kQ); }
  Value* k_cache() const { return operand(kKCache); }
  PageTableOperands pages() const;
  /// The K cache's scale array (an fp8e4m3 cache); null otherwise.
  Value* k_scales() const { return has_scales() ? operand(kKScales) : nullptr; }
  Value* scores() const { return result(0); }
};

/// causal_mask(scores[T, H, K], positions i32[T]) -> scores masked above each token's position.
class CausalMaskOp : public OpView<OpKind::kCausalMask, 2> {
 public:
  enum Operand { kScores, kPositions };
  explicit CausalMaskOp(const Node& node) : OpView(node) {}
  Value* scores() const { return operand(kScores); }
  Value* positions() const { return operand(kPositions); }
};

/// paged_pv(p f32[T, Hq, K], v_cache, page table...[, v_scales]) [{dtype}] -> [T, Hq, D].
class PagedPvOp : public OpView<OpKind::kPagedPv, 6, 1> {
 public:
  enum Operand { kProbs, kVCache, kPageTable, kVScales = kPageTable + PageTableOperands::kCount };
  explicit PagedPvOp(const Node& node) : OpView(node) {}
  Value* probs() const { return operand(kProbs); }
  Value* v_cache() const { return operand(kVCache); }
  PageTableOperands pages() const;
  /// The V cache's scale array (an fp8e4m3 cache); null otherwise.
  Value* v_scales() const { return has_scales() ? operand(kVScales) : nullptr; }
  Value* output() const { return result(0); }
};

/// rmsnorm(x[..., H], weight[H]) {eps} -> x / rms(x) * weight.
class RmsNormOp : public OpView<OpKind::kRmsNorm, 2> {
 public:
  enum Operand { kX, kWeight };
  explicit RmsNormOp(const Node& node) : OpView(node) {}
  Value* x() const { return operand(kX); }
  Value* weight() const { return operand(kWeight); }
  Value* output() const { return result(0); }

  static std::vector<Value*> operands(Value* x, Value* weight) { return {x, weight}; }
};

/// rmsnorm_residual(x, residual, weight[H]) {eps} -> (rmsnorm(x + residual) * weight,
/// x + residual).
class RmsNormResidualOp : public OpView<OpKind::kRmsNormResidual, 3> {
 public:
  enum Operand { kX, kResidual, kWeight };
  enum Result { kNormed, kSum };
  explicit RmsNormResidualOp(const Node& node) : OpView(node) {}
  Value* x() const { return operand(kX); }
  Value* residual() const { return operand(kResidual); }
  Value* weight() const { return operand(kWeight); }
  /// The normalized sum (result 0).
  Value* normed() const { return result(kNormed); }
  /// x + residual (result 1): the residual stream for the next layer.
  Value* sum() const { return result(kSum); }

  static std::vector<Value*> operands(Value* x, Value* residual, Value* weight) {
    return {x, residual, weight};
  }
};

/// rope(x[T, Hh, D], positions i32[T]) {theta, rotary_dim, layout[, scaling_*]} -> x rotated.
class RopeOp : public OpView<OpKind::kRope, 2> {
 public:
  enum Operand { kX, kPositions };
  explicit RopeOp(const Node& node) : OpView(node) {}
  Value* x() const { return operand(kX); }
  Value* positions() const { return operand(kPositions); }
  Value* output() const { return result(0); }

  static std::vector<Value*> operands(Value* x, Value* positions) { return {x, positions}; }
};

/// flash_attention(q[T,Hq,D], k[T,Hkv,D], v[T,Hkv,D], k_cache, v_cache, positions, slot_mapping,
/// page table...[, k_scales, v_scales]) {scale} -> (out[T, Hq, D], k_cache', v_cache'[,
/// k_scales', v_scales']): writes the k/v rows (quantized, for fp8e4m3 caches), then causal
/// attention over each sequence's pages.
class FlashAttentionOp : public OpView<OpKind::kFlashAttention, 11, 2> {
 public:
  enum Operand {
    kQ,
    kK,
    kV,
    kKCache,
    kVCache,
    kPositions,
    kSlotMapping,
    kPageTable,  // the first of the four page table operands
    kKScales = kPageTable + PageTableOperands::kCount,
    kVScales,
  };
  enum Result { kOutput, kKCacheOut, kVCacheOut, kKScalesOut, kVScalesOut };
  explicit FlashAttentionOp(const Node& node) : OpView(node) {}
  Value* q() const { return operand(kQ); }
  Value* k() const { return operand(kK); }
  Value* v() const { return operand(kV); }
  Value* k_cache() const { return operand(kKCache); }
  Value* v_cache() const { return operand(kVCache); }
  Value* positions() const { return operand(kPositions); }
  Value* slot_mapping() const { return operand(kSlotMapping); }
  PageTableOperands pages() const;
  Value* output() const { return result(kOutput); }
  /// The caches' scale arrays (fp8e4m3 caches); null otherwise.
  Value* k_scales() const { return has_scales() ? operand(kKScales) : nullptr; }
  Value* v_scales() const { return has_scales() ? operand(kVScales) : nullptr; }
  /// The caches after the writes: the inputs updated in place (they alias them).
  Value* k_cache_out() const { return result(kKCacheOut); }
  Value* v_cache_out() const { return result(kVCacheOut); }
  // (Null too for an unverified node whose results do not include them.)
  Value* k_scales_out() const {
    return has_scales() && node().outputs.size() > kVScalesOut ? result(kKScalesOut) : nullptr;
  }
  Value* v_scales_out() const {
    return has_scales() && node().outputs.size() > kVScalesOut ? result(kVScalesOut) : nullptr;
  }
  /// True for results that are a KV cache (or its scale array) updated in place rather than a
  /// buffer of their own.
  static bool result_aliases_cache(int result) { return result != kOutput; }

  struct Operands {
    Value* q = nullptr;
    Value* k = nullptr;
    Value* v = nullptr;
    Value* k_cache = nullptr;
    Value* v_cache = nullptr;
    Value* positions = nullptr;
    Value* slot_mapping = nullptr;
    PageTableOperands pages;
    Value* k_scales = nullptr;  // both, for fp8e4m3 caches, or neither
    Value* v_scales = nullptr;
  };
  /// The operand list in this op's order.
  static std::vector<Value*> operands(const Operands& o);
};

/// gemm(x[..., K], w[N, K][, bias[N]][, residual[..., N]]) {epilogue} -> [..., N]. The operand
/// count depends on the epilogue, so this view is built with GemmOp::of (not OpView's count).
class GemmOp {
 public:
  static constexpr OpKind kKind = OpKind::kGemm;
  enum Operand { kX, kWeight, kFirstEpilogueOperand };
  /// What the gemm adds after x·wᵀ (its `epilogue` attribute).
  enum class Epilogue : uint8_t { kNone, kBias, kResidual, kBiasResidual };

  static std::string_view epilogue_name(Epilogue e);  // "bias_residual"
  /// Parses an `epilogue` attribute; InvalidArgument naming the accepted values otherwise.
  static absl::StatusOr<Epilogue> parse_epilogue(std::string_view name);
  static Epilogue epilogue_for(bool bias, bool residual);
  static bool has_bias(Epilogue e) { return e == Epilogue::kBias || e == Epilogue::kBiasResidual; }
  static bool has_residual(Epilogue e) {
    return e == Epilogue::kResidual || e == Epilogue::kBiasResidual;
  }
  /// Operand count with this epilogue: x, w, then bias and residual when present.
  static int num_operands(Epilogue e) {
    return 2 + (has_bias(e) ? 1 : 0) + (has_residual(e) ? 1 : 0);
  }
  /// Operand indices of bias and residual (-1 when absent), the one place that orders them: bias
  /// first, then residual.
  static int bias_index(Epilogue e) { return has_bias(e) ? kFirstEpilogueOperand : -1; }
  static int residual_index(Epilogue e) {
    return has_residual(e) ? kFirstEpilogueOperand + (has_bias(e) ? 1 : 0) : -1;
  }
  /// The operand list of a gemm over x, w and the optional (nullptr) bias and residual.
  static std::vector<Value*> operands(Value* x, Value* w, Value* bias, Value* residual);

  /// The view of a gemm whose epilogue attribute parses and whose operand count matches it.
  static std::optional<GemmOp> of(const Node* node);

  const Node& node() const { return *node_; }
  Epilogue epilogue() const { return epilogue_; }
  Value* x() const { return node_->inputs[kX]; }
  Value* weight() const { return node_->inputs[kWeight]; }
  /// nullptr when the epilogue adds no bias.
  Value* bias() const;
  /// nullptr when the epilogue adds no residual.
  Value* residual() const;
  Value* output() const { return node_->outputs[0]; }

 private:
  GemmOp(const Node& node, Epilogue e) : node_(&node), epilogue_(e) {}
  const Node* node_;
  Epilogue epilogue_;
};

}  // namespace kiln
