// Emission of a KernelSpec's CUDA C++: a small generated config (type alias, constants, baked
// tables) followed by the template instantiation as an `extern "C" __global__` entry named by the
// spec's key; fused_elementwise kernels are generated whole from their expression DAG.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/kernel_spec.h"
#include "plan/plan.h"

namespace kiln {

/// One parameter of a generated entry, in order: its C type and name ("const kiln_t*", "q").
struct EntryDecl {
  std::string type;
  std::string name;
};

/// The entry's parameters (what a launch must pass, in order).
absl::StatusOr<std::vector<EntryDecl>> entry_decls(const KernelSpec& spec);
/// The same as the plan records them: name and how the launch packs it (from the C type).
absl::StatusOr<std::vector<EntryParam>> entry_params(const KernelSpec& spec);

/// The complete source NVRTC compiles: it #includes kernels/<family>.cuh (resolved from the
/// embedded files) and defines `extern "C" __global__ void <spec.key()>(...)`.
absl::StatusOr<std::string> emit_kernel_source(const KernelSpec& spec);

/// CUDA C++ spelling of an element type inside kernels ("kiln_k::bf16", "float", "int").
absl::StatusOr<std::string> kernel_type_name(DType dtype);

}  // namespace kiln
