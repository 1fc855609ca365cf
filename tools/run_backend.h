// The backend `kiln run` / `kiln bench` execute a plan on, chosen by --device: the GPU (CUDA) or
// the CPU reference backend, with "auto" taking the GPU when one is present and the plan carries
// kernels for it.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include "absl/status/statusor.h"
#include "plan/plan.h"
#include "runtime/backend.h"
#include "runtime/cuda/cuda_backend.h"

namespace kiln::tools {

/// `device` is "cuda" (the GPU, or an error that says why not: no GPU found, a plan for another
/// arch), "cpu", or "auto" (the GPU when there is one and `plan` has cubins, else the CPU; the
/// choice is printed on stderr). `blobs` reads the plan file's blobs (null for a plan built in
/// memory without kernels). With options.kv_pages 0 each backend sizes its own pool (the GPU from
/// kv_cache_gb or gpu_memory_fraction). A tensor-parallel plan takes one GPU per rank
/// (TensorParallelBackend; untested on GPUs), or runs all its ranks on the CPU.
absl::StatusOr<std::unique_ptr<Backend>> open_backend(const std::string& device, const Plan& plan,
                                                      const BackendOptions& options,
                                                      const PlanBlobReader& blobs);

/// `--persistent auto|on|off` for the commands that run a plan (BackendOptions::persistent).
void add_persistent_option(CLI::App& cmd, std::string& mode);
BackendOptions::Persistent persistent_mode(const std::string& mode);

/// `--cascade auto|off` for the commands that run a plan: whether decode steps whose sequences
/// share prefix pages run cascade attention (StepInputs::cascade; README "Cascade attention").
void add_cascade_option(CLI::App& cmd, std::string& mode);
CascadeMode cascade_mode(const std::string& mode);

}  // namespace kiln::tools
