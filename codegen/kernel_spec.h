// KernelSpec: one specialization of a kernels/*.cuh family (dtype + the template parameters that
// change register/shared-memory layout). Its canonical key() is both the generated kernel's entry
// name and its identity in the plan; the on-disk cache key additionally hashes source, arch,
// NVRTC version and flags (codegen/kernel_cache.h).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ir/dtype.h"
#include "plan/kernel_family.h"

namespace kiln {

/// The kernels/ file a family's template lives in ("" for generated families).
const char* family_file(KernelFamily family);

/// A plain description of one kernel specialization.
struct KernelSpec {
  KernelFamily family = KernelFamily::kRmsNorm;
  DType dtype = DType::kBF16;
  /// Layout-changing template parameters in key order, e.g. {{"d", 64}, {"g", 3}, {"q", 64}}.
  std::vector<std::pair<std::string, int64_t>> params;
  /// Layout-changing string parameters (rope "half"/"interleaved"), appended to the key as is.
  std::vector<std::string> tags;
  /// Data baked into the generated source that is not a layout parameter: the rope frequencies,
  /// a fused_elementwise expression and broadcast pattern. The key carries a short hash of it.
  std::string payload;
  /// fused_elementwise only: input dtypes and, per input, its shape aligned to the output's rank
  /// as "1" (broadcast) or "*" (same as the output) per axis; output dims ("576" or a symbol).
  std::vector<DType> input_dtypes;
  std::vector<std::string> input_patterns;
  std::vector<std::string> output_dims;
  std::string expr;
  /// rope only: inv_freq[rotary_dim / 2].
  std::vector<float> inv_freq;

  /// Canonical name, e.g. "flash_attention_prefill_bf16_d64_g3_q64_kv64_w4" (a valid C identifier).
  std::string key() const;
  int64_t param(const std::string& name, int64_t fallback = 0) const;
  bool operator==(const KernelSpec& other) const { return key() == other.key(); }
};

}  // namespace kiln
