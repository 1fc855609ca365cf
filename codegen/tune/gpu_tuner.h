// `kiln compile --tune`: the GraphTuner that times candidates on GPU 0 with the tuning families
// kiln has (flash_attention decode, rmsnorm), compiling them for the device's own arch through
// the kernel cache, and keeping the choices in <kernel cache dir>/tune.json.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "codegen/tune/graph_tuner.h"

namespace kiln {

/// Unavailable (saying why) without a GPU driver or device; the caller then compiles with the
/// default configurations.
absl::StatusOr<std::unique_ptr<GraphTuner>> make_gpu_tuner(const std::string& kernel_cache_dir);

}  // namespace kiln
