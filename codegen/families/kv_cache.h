// What the KV-cache families (kv_append, rope_kv_append, flash_attention_prefill/decode) share
// about the cache they read or write: its elements are the activations' dtype, or fp8e4m3 codes
// with one f32 scale per (slot, KV head) in scale arrays beside the pages (kernels/fp8.cuh).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace kiln {

enum class KvCacheKind : uint8_t { kSameAsRows, kFp8E4M3 };

/// The kind of the cache `cache` (a KV cache value): fp8e4m3, or the rows' own dtype.
KvCacheKind kv_cache_kind(const Value* cache);

/// The config line naming an fp8e4m3 cache's element type (`kiln_kv_t`, what the entries'
/// cache pointers point to); "" for a cache of the activations' dtype (its entries use kiln_t).
std::string kv_cache_typedef(KvCacheKind cache);
/// The spec-key tags of the cache: {"fp8kv"} for fp8e4m3, none otherwise.
std::vector<std::string> kv_cache_tags(KvCacheKind cache);

}  // namespace kiln
