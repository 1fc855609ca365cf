// KvLayout's byte counts: the only place the KV cache's page and token sizes are computed.
#include "plan/kv_layout.h"

namespace kiln {
namespace {

// Bytes of `elements` values of `dtype`, rounding a partial quantization block up.
int64_t bytes_of(DType dtype, int64_t elements) {
  return (elements * block_bytes(dtype) + block_elements(dtype) - 1) / block_elements(dtype);
}

}  // namespace

int64_t KvLayout::element_bytes() const { return bytes_of(dtype, 1); }

int64_t KvLayout::data_bytes_per_page() const {
  return bytes_of(dtype, int64_t{page_size} * num_kv_heads * head_dim);  // NHD
}

int64_t KvLayout::scale_bytes_per_page() const {
  return has_scales() ? int64_t{page_size} * num_kv_heads * 4 : 0;
}

int64_t KvLayout::bytes_per_page_per_layer() const {
  // K and V: [page_size, kv_heads, head_dim] each, and their scales.
  return 2 * (data_bytes_per_page() + scale_bytes_per_page());
}

int64_t KvLayout::bytes_per_page() const {
  return int64_t{num_layers} * bytes_per_page_per_layer();
}

int64_t KvLayout::bytes_per_token() const {
  const int64_t scales = has_scales() ? int64_t{num_kv_heads} * 4 : 0;
  return 2 * int64_t{num_layers} * (bytes_of(dtype, int64_t{num_kv_heads} * head_dim) + scales);
}

int64_t KvLayout::pages_for_budget(int64_t budget_bytes) const {
  const int64_t page = bytes_per_page();
  if (page <= 0 || budget_bytes <= 0) return 0;
  return budget_bytes / page;
}

}  // namespace kiln
