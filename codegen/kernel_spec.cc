// KernelSpec names and canonical keys.
#include "codegen/kernel_spec.h"

#include <xxhash.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kiln {

const char* family_file(KernelFamily family) {
  switch (family) {
    case KernelFamily::kFlashAttentionPrefill: return "flash_attention_prefill.cuh";
    case KernelFamily::kFlashAttentionDecode:
    case KernelFamily::kFlashAttentionMerge: return "flash_attention_decode.cuh";
    case KernelFamily::kKvAppend:
    case KernelFamily::kRope: return "rope.cuh";
    case KernelFamily::kRmsNorm:
    case KernelFamily::kRmsNormResidual: return "rmsnorm_residual.cuh";
    case KernelFamily::kEmbedding:
    case KernelFamily::kLastTokenRows: return "embedding.cuh";
    case KernelFamily::kSampling: return "sampling.cuh";
    case KernelFamily::kFusedElementwise: return "";
  }
  return "";
}

std::string KernelSpec::key() const {
  std::string k = absl::StrCat(family_name(family), "_", dtype_name(dtype));
  for (const auto& [name, value] : params) absl::StrAppend(&k, "_", name, value);
  for (const std::string& tag : tags) absl::StrAppend(&k, "_", tag);
  if (!payload.empty()) {
    // 32 bits of xxh3 name the baked data; a clash would only merge two kernels' names, and the
    // plan writer rejects two different sources under one key.
    absl::StrAppend(&k, "_h",
                    absl::StrFormat("%08x", static_cast<uint32_t>(
                                                XXH3_64bits(payload.data(), payload.size()))));
  }
  return k;
}

int64_t KernelSpec::param(const std::string& name, int64_t fallback) const {
  for (const auto& [n, v] : params) {
    if (n == name) return v;
  }
  return fallback;
}

}  // namespace kiln
