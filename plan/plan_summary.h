// Human-readable views of a loaded plan: `kiln inspect` and `kiln ir <plan> --kernels/--source`.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "plan/plan_file.h"

namespace kiln {

/// Model, arch, toolchain, kernels (registers, shared memory), GEMMs, arena, KV layout, weights.
std::string plan_summary(const LoadedPlan& plan);
/// A tensor-parallel plan's ranks: each rank's weights (its own slices and what every rank holds),
/// arena and KV bytes per page, all ranks' totals, and the collectives of a step.
std::string tensor_parallel_summary(const Plan& plan);
/// One line per kernel: key, registers, shared memory, cubin size, launches.
std::string plan_kernel_list(const LoadedPlan& plan);
/// The generated CUDA source of kernel `key` (`ptx = true`: its PTX instead).
absl::StatusOr<std::string> plan_kernel_source(const LoadedPlan& plan, const std::string& key,
                                               bool ptx = false);

}  // namespace kiln
