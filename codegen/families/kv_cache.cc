// KV cache kinds of the attention families (see kv_cache.h).
#include "codegen/families/kv_cache.h"

namespace kiln {

KvCacheKind kv_cache_kind(const Value* cache) {
  return cache->type.dtype == DType::kFP8E4M3 ? KvCacheKind::kFp8E4M3 : KvCacheKind::kSameAsRows;
}

std::string kv_cache_typedef(KvCacheKind cache) {
  return cache == KvCacheKind::kFp8E4M3 ? "typedef kiln_k::fp8e4m3 kiln_kv_t;\n" : "";
}

std::vector<std::string> kv_cache_tags(KvCacheKind cache) {
  if (cache == KvCacheKind::kFp8E4M3) return {"fp8kv"};
  return {};
}

}  // namespace kiln
