// NVRTC compilation of generated kernel sources to cubin (+ PTX for inspection) for one target
// arch, with the compile log and the register / shared-memory usage ptxas reports. Needs no GPU.
// When kiln is built without the CUDA toolkit, every call says NVRTC is not available.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kiln {

/// Target archs kiln accepts: sm_90a (Hopper, default), sm_89 (Ada), sm_80 (Ampere).
const std::vector<std::string>& accepted_archs();
/// OK for an accepted arch; otherwise an error listing them.
absl::Status check_arch(const std::string& arch);

/// What one compilation produced.
struct CompiledKernel {
  std::string name;   // the entry (spec key)
  std::string cubin;  // bytes
  std::string ptx;
  std::string log;  // NVRTC + ptxas messages
  int registers = 0;
  int shared_bytes = 0;  // static shared memory (from the cubin; see codegen/cubin_info.h)
  int stack_bytes = 0;   // local-memory stack frame (non-zero hints at register spills)
  int spill_bytes = 0;
};

/// Parses ptxas -v lines ("Used 72 registers, used 1 barriers, 34816 bytes smem") into `k`.
void parse_ptxas_info(const std::string& log, CompiledKernel& k);

/// True when this binary was built with NVRTC.
bool nvrtc_available();
/// "13.0", or "unavailable".
std::string nvrtc_version();
/// The flags every kernel is compiled with for `arch` (part of the cache key).
std::vector<std::string> nvrtc_flags(const std::string& arch);

/// Compiles `source` (which may #include any embedded kernels/*.cuh) and returns the cubin. A
/// compile error's message names `name` and shows the generated source lines around the first
/// error line.
absl::StatusOr<CompiledKernel> nvrtc_compile(const std::string& name, const std::string& source,
                                             const std::string& arch);

/// Number of nvrtc_compile calls in this process (tests check cache hits skip NVRTC).
int64_t nvrtc_compile_count();

}  // namespace kiln
