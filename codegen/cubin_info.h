// Resource usage of a kernel read from its cubin (an ELF file): registers from the .nv.info
// EIATTR_REGCOUNT attribute, static shared memory from the .nv.shared.<kernel> section, stack
// frame from EIATTR_FRAME_SIZE. The cubin is the source of truth: ptxas -v log text is not
// always produced (it was missing on the H200 machine for sm_90a under parallel test runs).
#pragma once

#include <string_view>

#include "absl/status/statusor.h"

namespace kiln {

struct CubinInfo {
  int registers = 0;
  int shared_bytes = 0;  // static shared memory as laid out (on sm_90 it includes the 1 KiB the
                         // hardware reserves per block, which ptxas -v leaves out)
  int frame_bytes = 0;   // per-thread stack frame
};

/// Reads `kernel`'s attributes from `cubin`. Every offset is checked against the buffer; a
/// malformed ELF or a kernel the cubin lacks gives InvalidArgument / NotFound.
absl::StatusOr<CubinInfo> read_cubin_info(std::string_view cubin, std::string_view kernel);

}  // namespace kiln
