// --device for `kiln run` (see run_backend.h).
#include "tools/run_backend.h"

#include <algorithm>
#include <iostream>

#include "runtime/cuda/tensor_parallel_backend.h"
#include "runtime/reference/reference_backend.h"

namespace kiln::tools {

absl::StatusOr<std::unique_ptr<Backend>> open_backend(const std::string& device, const Plan& plan,
                                                      const BackendOptions& options,
                                                      const PlanBlobReader& blobs) {
  const bool has_kernels = !plan.kernels.empty() && blobs != nullptr &&
                           std::all_of(plan.kernels.begin(), plan.kernels.end(),
                                       [](const PlanKernel& k) { return k.cubin_blob >= 0; });
  if (plan.ranks > 1 && (device == "cuda" || (device == "auto" && has_kernels))) {
    // A tensor-parallel plan: one GPU per rank (runtime/cuda/tensor_parallel_backend.h).
    absl::StatusOr<std::unique_ptr<TensorParallelBackend>> gpus =
        TensorParallelBackend::create(plan, options, blobs);
    if (gpus.ok()) return std::unique_ptr<Backend>(std::move(*gpus));
    if (device == "cuda" || gpus.status().code() != absl::StatusCode::kUnavailable) {
      return gpus.status();
    }
    std::cerr << "kiln: " << gpus.status().message() << "; using the CPU reference backend\n";
  } else if (device == "cuda" || (device == "auto" && has_kernels)) {
    absl::StatusOr<std::unique_ptr<CudaBackend>> gpu = CudaBackend::create(plan, options, blobs);
    if (gpu.ok()) return std::unique_ptr<Backend>(std::move(*gpu));
    // auto falls back only when there is no GPU; a GPU that cannot run the plan is an error.
    if (device == "cuda" || gpu.status().code() != absl::StatusCode::kUnavailable) {
      return gpu.status();
    }
    std::cerr << "kiln: " << gpu.status().message() << "; using the CPU reference backend\n";
  } else if (device == "auto") {
    std::cerr << "kiln: the plan has no GPU kernels; using the CPU reference backend\n";
  }
  absl::StatusOr<std::unique_ptr<ReferenceBackend>> cpu =
      ReferenceBackend::create(plan, options, blobs);
  if (!cpu.ok()) return cpu.status();
  return std::unique_ptr<Backend>(std::move(*cpu));
}

void add_persistent_option(CLI::App& cmd, std::string& mode) {
  cmd.add_option("--persistent", mode,
                 "GPU, a plan compiled with --persistent: run its small-batch decode steps as one "
                 "persistent kernel (on), launch them op by op (off), or time both at load and keep "
                 "the faster (auto)")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
}

// Off by default for now: the cascade kernels passed their GPU test, but the runtime's cascade
// path (layout upload, CUDA-graph key, launch substitution) has not yet run on a GPU
// (CudaBackendGpu.CascadeGivesThePlainPathsTokens, bench/gpu/cascade.sh). Make auto the default
// once it has, and has been measured faster than plain decode.
void add_cascade_option(CLI::App& cmd, std::string& mode) {
  cmd.add_option("--cascade", mode,
                 "decode steps whose sequences share a prefix of KV pages (a prompt the prefix "
                 "cache or a fork shares): attend to the prefix once for all of them (auto), or "
                 "per sequence as plain paged decode (off)")
      ->check(CLI::IsMember({"auto", "off"}))
      ->capture_default_str();
}

CascadeMode cascade_mode(const std::string& mode) {
  return mode == "off" ? CascadeMode::kOff : CascadeMode::kAuto;
}

BackendOptions::Persistent persistent_mode(const std::string& mode) {
  if (mode == "on") return BackendOptions::Persistent::kOn;
  if (mode == "off") return BackendOptions::Persistent::kOff;
  return BackendOptions::Persistent::kAuto;
}

}  // namespace kiln::tools
