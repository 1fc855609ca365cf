// Kernel family names (see kernel_family.h).
#include "plan/kernel_family.h"

#include <array>

namespace kiln {
namespace {

constexpr std::array kFamilies = {
    KernelFamily::kFlashAttentionPrefill,
    KernelFamily::kFlashAttentionDecode,
    KernelFamily::kKvAppend,
    KernelFamily::kRope,
    KernelFamily::kRmsNorm,
    KernelFamily::kRmsNormResidual,
    KernelFamily::kEmbedding,
    KernelFamily::kLastTokenRows,
    KernelFamily::kSampling,
    KernelFamily::kFusedElementwise,
    KernelFamily::kGemv,
    KernelFamily::kRopeKvAppend,
    KernelFamily::kPersistentDecode,
    KernelFamily::kCascadePrefix,
    KernelFamily::kCascadeSuffix,
};

}  // namespace

const char* family_name(KernelFamily family) {
  switch (family) {
    case KernelFamily::kFlashAttentionPrefill: return "flash_attention_prefill";
    case KernelFamily::kFlashAttentionDecode: return "flash_attention_decode";
    case KernelFamily::kKvAppend: return "kv_append";
    case KernelFamily::kRope: return "rope";
    case KernelFamily::kRmsNorm: return "rmsnorm";
    case KernelFamily::kRmsNormResidual: return "rmsnorm_residual";
    case KernelFamily::kEmbedding: return "embedding";
    case KernelFamily::kLastTokenRows: return "last_token_rows";
    case KernelFamily::kSampling: return "sampling";
    case KernelFamily::kFusedElementwise: return "fused_elementwise";
    case KernelFamily::kGemv: return "gemv";
    case KernelFamily::kRopeKvAppend: return "rope_kv_append";
    case KernelFamily::kPersistentDecode: return "persistent_decode";
    case KernelFamily::kCascadePrefix: return "cascade_prefix";
    case KernelFamily::kCascadeSuffix: return "cascade_suffix";
  }
  return "unknown";
}

std::optional<KernelFamily> family_from_name(std::string_view name) {
  for (KernelFamily f : kFamilies) {
    if (name == family_name(f)) return f;
  }
  return std::nullopt;
}

}  // namespace kiln
