// The fuzz targets' way of handing an input to a reader that takes a path (GGUF and safetensors
// map files): the bytes written to one scratch file per process, rewritten for every input.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace kiln::fuzz {

/// Writes `data` to this process's scratch file (under $TMPDIR, /dev/shm when it exists) and
/// returns its path; the name ends in `suffix`.
inline const std::string& write_input_file(const uint8_t* data, size_t size,
                                           const std::string& suffix) {
  static const std::string path = [&] {
    const char* tmp = std::getenv("TMPDIR");
    std::string dir = tmp ? tmp : (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    return dir + "/kiln-fuzz-" + std::to_string(getpid()) + suffix;
  }();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();  // the harness, not the reader, is broken
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

}  // namespace kiln::fuzz
