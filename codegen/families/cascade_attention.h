// Families cascade_prefix and cascade_suffix (kernels/cascade_attention.cuh): cascade attention
// for a decode step whose sequences share a prefix of KV pages (runtime/kv/cascade_layout.h).
// cascade_prefix attends every member's query heads to the shared prefix, each K/V tile loaded
// once into shared memory per block of `warps` x 16 query rows, and writes per-split partials;
// cascade_suffix is the split-KV decode kernel over each sequence's suffix whose last split merges
// those partials with its own (log-sum-exp). Both read the decode spec's knobs where they share
// them; the prefix kernel has its own tile and warp counts. A cache of fp8e4m3 codes is refused:
// the prefix kernel has no dequantizing tile path yet, and plain paged decode serves such plans.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/families/family.h"
#include "codegen/families/flash_attention_decode.h"
#include "codegen/families/kv_cache.h"

namespace kiln {

struct CascadePrefixSpec final : KernelSpec {
  DType dtype = DType::kBF16;
  int64_t head_dim = 0;
  int64_t group = 1;
  int64_t tile_kv = 64;  // prefix KV rows per shared-memory stage (two stages)
  int64_t warps = 4;     // 16 query rows each: the block's rows share every K/V tile

  KernelFamily family() const override { return KernelFamily::kCascadePrefix; }
  /// cascade_prefix_<dt>_d<d>_g<g>_kv<tkv>_w<w>
  std::string key() const override;
  std::vector<EntryDecl> entry() const override;
  absl::StatusOr<KernelTemplate> kernel_template() const override;
  /// Dynamic shared memory per block (CascadePrefixSmem in the kernel).
  int64_t shared_bytes() const;
  /// Query rows (member sequences x query heads of one KV head) per block.
  int64_t rows_per_block() const { return 16 * warps; }
};

struct CascadeSuffixSpec final : KernelSpec {
  FlashAttentionDecodeSpec decode;  // the decode kernel it instantiates with CASCADE = true

  KernelFamily family() const override { return KernelFamily::kCascadeSuffix; }
  /// cascade_suffix_<the decode key's parameters>
  std::string key() const override;
  /// The decode entry, then kv_start [S], prefix_o, prefix_lse (the prefix kernel's outputs) and
  /// prefix_splits.
  std::vector<EntryDecl> entry() const override;
  absl::StatusOr<KernelTemplate> kernel_template() const override;
  int64_t shared_bytes() const { return decode.shared_bytes(); }
};

/// The prefix kernel for these shapes: `tile_kv` 16/32/64, `warps` 1/2/4/8, G <= 16, head_dim a
/// multiple of 16 up to 256. InvalidArgument names what does not fit; Unimplemented for an
/// fp8e4m3 cache.
absl::StatusOr<std::shared_ptr<CascadePrefixSpec>> make_cascade_prefix_spec(
    DType dtype, KvCacheKind cache, int64_t head_dim, int64_t group, int64_t tile_kv = 64,
    int64_t warps = 4);
/// The suffix kernel: the decode spec of `c` in its CASCADE form. Unimplemented for fp8e4m3.
absl::StatusOr<std::shared_ptr<CascadeSuffixSpec>> make_cascade_suffix_spec(
    DType dtype, KvCacheKind cache, int64_t head_dim, int64_t group, const DecodeConfig& c);

/// What the cascade lowering takes from a flash_attention node's decode lowering.
struct CascadeDecodeLowering {
  DType dtype = DType::kBF16;
  KvCacheKind cache = KvCacheKind::kSameAsRows;
  int64_t head_dim = 0, group = 1, q_heads = 0, kv_heads = 0;
  DecodeConfig config;
  int64_t max_split = 0;  // the split capacity of the decode workspaces the suffix reuses
  int64_t target_blocks = 0;
  int decode_launch = -1;               // index of the node's plain decode launch
  std::vector<BoundParam> decode_args;  // its bindings (the suffix's first parameters)
};

/// Adds the cascade forms of a decode attention (StepKind::kCascade launches: cascade_prefix over
/// the shared prefix into the prefix workspaces, then cascade_suffix over each sequence's suffix,
/// reusing the plain launch's partials and split counters) and the PlanCascade that names them
/// with the plain launch. Their grids and split counts are expressions of the cascade symbols (CM,
/// CL, CK in plan.h), so a CUDA graph's launch signature holds the layout's shape. Nothing for an
/// fp8e4m3 cache (the prefix kernel has no dequantizing tile path; plain decode serves it), nor
/// for a shape the prefix kernel refuses (make_cascade_prefix_spec).
absl::Status lower_cascade_decode(LoweringContext& ctx, CascadeDecodeLowering l);

/// The prefix kernel's split count as an expression of CM and CL: cascade_prefix_splits for
/// CM x group query rows per KV head and a prefix of CL tokens.
std::string cascade_prefix_split_expr(const CascadePrefixSpec& spec, int64_t kv_heads,
                                      int64_t target_blocks = kDecodeTargetBlocks);

/// The most prefix splits (the prefix workspaces are sized for it).
inline constexpr int64_t kMaxCascadePrefixSplits = 64;

/// The prefix kernel's split count for `rows` query rows per KV head: enough (row blocks x KV
/// heads x splits) blocks to fill `target_blocks`, each split keeping at least 512 prefix rows.
int64_t cascade_prefix_splits(const CascadePrefixSpec& spec, int64_t rows, int64_t kv_heads,
                              int64_t prefix_len, int64_t target_blocks = kDecodeTargetBlocks);

}  // namespace kiln
