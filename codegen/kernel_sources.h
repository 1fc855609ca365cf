// The kernels/*.cuh templates, embedded into the binary at build time (codegen/CMakeLists.txt
// generates embedded_kernels.cc); NVRTC resolves their #includes from this table.
#pragma once

#include <string_view>
#include <vector>

namespace kiln {

struct EmbeddedKernelFile {
  std::string_view name;  // "flash_attention_prefill.cuh"
  std::string_view text;
};

/// Every embedded kernel file, sorted by name.
const std::vector<EmbeddedKernelFile>& embedded_kernel_files();

/// The text of kernels/<name>, or an empty view when there is no such file.
inline std::string_view kernel_file(std::string_view name) {
  for (const EmbeddedKernelFile& f : embedded_kernel_files()) {
    if (f.name == name) return f.text;
  }
  return {};
}

}  // namespace kiln
