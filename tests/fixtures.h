// Where tests find generated fixtures (KILN_FIXTURES, set by ctest) and the cached default model.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace kiln::testing {

/// The folder scripts/make_fixture.py --test-fixtures wrote (one subfolder per preset).
inline std::string fixtures_dir() {
  const char* d = std::getenv("KILN_FIXTURES");
  return d ? d : "/KILN_FIXTURES-not-set-run-through-ctest";
}

inline std::string fixture(const std::string& preset, const std::string& file = "") {
  std::string dir = fixtures_dir() + "/" + preset;
  return file.empty() ? dir : dir + "/" + file;
}

/// The default model fetched by scripts/fetch-model.sh, or "" when it is not in the cache.
inline std::string smollm2_gguf() {
  const char* cache = std::getenv("KILN_CACHE");
  const char* home = std::getenv("HOME");
  std::string root = cache ? cache : std::string(home ? home : "/root") + "/.cache/kiln";
  std::string path = root + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  return std::filesystem::exists(path) ? path : "";
}

/// True in CI (the environment has CI=true): there a missing default model fails its tests, so a
/// green run never hides that they were skipped.
inline bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

/// Skips the test with `reason` outside CI; fails it in CI (see in_ci).
#define KILN_SKIP_OUTSIDE_CI(reason)                                                           \
  do {                                                                                         \
    if (::kiln::testing::in_ci()) {                                                            \
      GTEST_FAIL() << reason << " (CI=true: missing inputs fail the run instead of skipping)"; \
    }                                                                                          \
    GTEST_SKIP() << reason;                                                                    \
  } while (0)

}  // namespace kiln::testing

#include <unistd.h>

#include <gtest/gtest.h>

namespace kiln::testing {

/// A temp path unique to the running test case and process: ctest runs the cases of one binary
/// in parallel processes, so a shared name would let one case truncate another's mapped file.
inline std::string unique_temp_path(const std::string& name) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string test = info ? std::string(info->test_suite_name()) + "." + info->name() : "none";
  for (char& c : test) {
    if (c == '/') c = '_';
  }
  return ::testing::TempDir() + "/" + test + "." + std::to_string(getpid()) + "." + name;
}

/// Skips the test with `reason` outside CI; fails it in CI (see in_ci).
#define KILN_SKIP_OUTSIDE_CI(reason)                                                           \
  do {                                                                                         \
    if (::kiln::testing::in_ci()) {                                                            \
      GTEST_FAIL() << reason << " (CI=true: missing inputs fail the run instead of skipping)"; \
    }                                                                                          \
    GTEST_SKIP() << reason;                                                                    \
  } while (0)

}  // namespace kiln::testing
