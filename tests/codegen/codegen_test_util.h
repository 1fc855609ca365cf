// Shared helpers of the codegen tests: the hand-written fused IR fixtures and a kernel cache that
// persists in the build's fixtures folder across test runs (NVRTC compiles take seconds).
#pragma once

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "codegen/kernel_cache.h"
#include "ir/graph.h"
#include "ir/parser.h"
#include "tests/fixtures.h"

namespace kiln::testing {

inline std::string codegen_testdata(const std::string& name) {
  return std::string(KILN_SOURCE_DIR) + "/tests/codegen/testdata/" + name;
}

inline std::unique_ptr<Graph> load_kir(const std::string& name) {
  std::ifstream in(codegen_testdata(name));
  std::stringstream ss;
  ss << in.rdbuf();
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(ss.str());
  if (!g.ok()) return nullptr;
  return std::move(*g);
}

/// Kernel cache kept in the fixtures folder: keyed by source/arch/NVRTC/flags like the real one.
inline std::string fixture_kernel_cache() { return fixtures_dir() + "/kernel-cache"; }

}  // namespace kiln::testing
