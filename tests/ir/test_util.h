// Shared helpers for IR tests: reading test data beside the sources.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

namespace kiln::testing {

inline std::string read_source_file(const std::string& relative) {
  std::ifstream in(std::string(KILN_SOURCE_DIR) + "/" + relative, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace kiln::testing
