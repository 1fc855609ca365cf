// The kernel families a plan can launch. Part of the contract: codegen/families/ defines each
// family once (parameters, key, source, signature, launch rule, bindings), and the runtime may
// dispatch on the family (e.g. `kiln run --check` names the op a launch belongs to).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace kiln {

/// Each but kFusedElementwise is (part of) a kernels/<name>.cuh file.
enum class KernelFamily : uint8_t {
  kFlashAttentionPrefill,  // flash_attention_prefill.cuh
  kFlashAttentionDecode,   // flash_attention_decode.cuh (split-KV, the last split merges)
  kKvAppend,               // rope.cuh: K/V rows -> paged cache at slot_mapping
  kRope,                   // rope.cuh
  kRmsNorm,                // rmsnorm_residual.cuh without the residual
  kRmsNormResidual,        // rmsnorm_residual.cuh
  kEmbedding,              // embedding.cuh: table[ids]
  kLastTokenRows,          // embedding.cuh: hidden[qo_indptr[s+1]-1]
  kSampling,               // sampling.cuh
  kFusedElementwise,       // generated from the expression DAG
  kGemv,                   // gemv.cuh: small-batch GEMM (M <= 16 token rows)
  kRopeKvAppend,           // rope.cuh: rope of q and k + the KV append, one launch
  kPersistentDecode,       // persistent_decode.cuh: a decode step's launches as tasks of one
  kCascadePrefix,          // cascade_attention.cuh: every member's queries against a shared prefix
  kCascadeSuffix,          // flash_attention_decode.cuh (CASCADE): suffixes + the prefix merge
};

/// "flash_attention_prefill", "rmsnorm_residual", ...
const char* family_name(KernelFamily family);
/// The family named `name`, or nullopt.
std::optional<KernelFamily> family_from_name(std::string_view name);

}  // namespace kiln
