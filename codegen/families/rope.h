// Families rope, kv_append and rope_kv_append (kernels/rope.cuh): rotary embeddings of q/k rows
// by position, with the inverse frequencies baked into the source; the copy of new K/V rows into
// the paged cache at slot_mapping (launched by the flash_attention lowering,
// codegen/families/attention.h); and both in one launch where an attention's q and k are ropes.
#pragma once

#include <optional>
#include <vector>

#include "codegen/families/family.h"
#include "codegen/families/kv_cache.h"

namespace kiln {

struct RopeSpec final : KernelSpec {
  DType dtype = DType::kBF16;
  int64_t head_dim = 0;
  int64_t rotary_dim = 0;       // leading dims of each head that rotate
  bool rotate_half = true;      // pairs (i, i + r/2); false: adjacent pairs (2i, 2i+1)
  std::vector<float> inv_freq;  // [rotary_dim / 2], baked into the source
  int64_t x_row_stride = 0;     // elements between x's token rows; 0: contiguous (heads * d)

  KernelFamily family() const override { return KernelFamily::kRope; }
  /// rope_<dt>_d<d>_r<r>[_xs<stride>]_<half|interleaved>_h<hash of inv_freq>
  std::string key() const override;
  std::vector<EntryDecl> entry() const override;
  absl::StatusOr<KernelTemplate> kernel_template() const override;
};

/// Threads per block of the KV append launches (and of rope_kv_append): 8 warps.
inline constexpr int64_t kKvAppendThreads = 256;

/// kv_append: the step's K/V rows copied into the cache, or (an fp8e4m3 cache) quantized there,
/// one warp per row.
struct KvAppendSpec final : KernelSpec {
  DType dtype = DType::kBF16;
  KvCacheKind cache = KvCacheKind::kSameAsRows;
  int64_t head_dim = 0;
  int64_t k_row_stride = 0, v_row_stride = 0;  // elements between token rows; 0: contiguous

  KernelFamily family() const override { return KernelFamily::kKvAppend; }
  std::string key() const override;  // kv_append_<dt>_d<d>[_ks<stride>][_vs<stride>][_fp8kv]
  std::vector<EntryDecl> entry() const override;
  absl::StatusOr<KernelTemplate> kernel_template() const override;
};

/// rope_kv_append: both ropes of an attention and its KV append in one launch (kernels/rope.cuh).
struct RopeKvAppendSpec final : KernelSpec {
  DType dtype = DType::kBF16;
  KvCacheKind cache = KvCacheKind::kSameAsRows;
  int64_t head_dim = 0;
  int64_t rotary_dim = 0;
  bool rotate_half = true;
  std::vector<float> inv_freq;
  int64_t q_row_stride = 0, k_row_stride = 0, v_row_stride = 0;  // 0: contiguous

  KernelFamily family() const override { return KernelFamily::kRopeKvAppend; }
  /// rope_kv_append_<dt>_d<d>_r<r>[_qs<n>][_ks<n>][_vs<n>]_<half|interleaved>[_fp8kv]_h<hash>
  std::string key() const override;
  std::vector<EntryDecl> entry() const override;
  absl::StatusOr<KernelTemplate> kernel_template() const override;
};

/// The two ropes that `attention` (a flash_attention node) absorbs into its KV append: its q and
/// k are rope results with the same positions and attributes, read by nothing else. Lowered
/// together at the q rope (one rope_kv_append launch that writes both rope results and the cache
/// rows); the k rope then has no launch and the attention no kv_append. Every value keeps its
/// bytes, so `kiln run --check` still reads each node's inputs and results.
struct RopePair {
  const Node* q_rope = nullptr;
  const Node* k_rope = nullptr;
};
std::optional<RopePair> ropes_absorbed_by(const Graph& graph, const Node& attention);

/// rope(x [T, heads, head_dim], positions); see RopePair for the ropes of an attention.
absl::Status lower_rope(const Node& node, LoweringContext& ctx);

/// The kv_append launch writing k, v [T, kv_heads, head_dim] into the caches at slot_mapping[T]
/// (quantized, with their scale arrays k_scales / v_scales, for fp8e4m3 caches; else null).
absl::Status launch_kv_append(LoweringContext& ctx, DType dtype, const Value* k, const Value* v,
                              const Value* k_cache, const Value* v_cache, const Value* k_scales,
                              const Value* v_scales, const Value* slot_mapping);

}  // namespace kiln
