// KvLayout: the one home of the paged KV cache's shape facts — page size, layout, dtype, and the
// bytes one page takes per layer and over all layers (with an fp8e4m3 cache, the codes and their
// per-(slot, KV head) f32 scales). plan-kv computes it, the plan carries it, and the runtime sizes
// its pool from it.
#pragma once

#include <cstdint>

#include "ir/dtype.h"

namespace kiln {

/// Element order inside one page of one layer's K (or V) array.
enum class KvPageLayout : uint8_t {
  kNHD,  ///< [page_size, kv_heads, head_dim] (FlashInfer's NHD)
};

struct KvLayout {
  int32_t page_size = 16;  ///< tokens per page
  KvPageLayout layout = KvPageLayout::kNHD;
  DType dtype = DType::kBF16;
  int32_t num_layers = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;

  /// Bytes of one element of `dtype`.
  int64_t element_bytes() const;
  /// Whether each (slot, KV head) row carries an f32 scale beside its codes (fp8e4m3).
  bool has_scales() const { return dtype == DType::kFP8E4M3; }
  /// Bytes of one page of one layer's K (or V) elements: [page_size, kv_heads, head_dim].
  int64_t data_bytes_per_page() const;
  /// Bytes of the scales of one page of one layer's K (or V): f32[page_size, kv_heads], 0 for
  /// a dtype without scales. They live in a scale array beside the pages, page for page.
  int64_t scale_bytes_per_page() const;
  /// Bytes of one page of K plus one page of V (and their scales), for one layer.
  int64_t bytes_per_page_per_layer() const;
  /// Bytes of one page over every layer, K and V: what one page of the pool costs.
  int64_t bytes_per_page() const;
  /// Bytes of one token over every layer, K and V.
  int64_t bytes_per_token() const;
  /// Pages that fit in `budget_bytes` (0 when the layout is empty or the budget too small).
  int64_t pages_for_budget(int64_t budget_bytes) const;

  bool operator==(const KvLayout&) const = default;
};

}  // namespace kiln
