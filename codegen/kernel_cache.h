// The content-addressed on-disk kernel cache ($KILN_CACHE/kernels, default ~/.cache/kiln/kernels)
// and the parallel builder that fills it: a cubin is reused when xxh3(source, embedded headers,
// arch, NVRTC version, flags) matches. Each entry is guarded by flock on its own lock file so
// concurrent `kiln compile`s (or threads) compile it once and never see a half-written entry.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codegen/nvrtc_compiler.h"

namespace kiln {

/// $KILN_CACHE or ~/.cache/kiln (the cache root; kernels live in <root>/kernels).
std::string default_cache_root();

/// 16 hex digits of xxh3 over everything that determines the cubin.
std::string kernel_cache_key(const std::string& source, const std::string& arch,
                             const std::string& nvrtc_version,
                             const std::vector<std::string>& flags);

class KernelCache {
 public:
  /// `dir` is the kernels folder itself (created on first store).
  explicit KernelCache(std::string dir) : dir_(std::move(dir)) {}
  const std::string& dir() const { return dir_; }

  /// Returns the cached kernel for `key`, or compiles `source` with NVRTC and stores it, all
  /// under the entry's file lock. `hit` (optional) says whether NVRTC was skipped.
  absl::StatusOr<CompiledKernel> get_or_compile(const std::string& name, const std::string& source,
                                                const std::string& arch, bool* hit = nullptr);

 private:
  std::optional<CompiledKernel> load(const std::string& path, const std::string& name) const;
  absl::Status store(const std::string& path, const CompiledKernel& k) const;
  std::string dir_;
};

/// One kernel to build.
struct KernelJob {
  std::string name;    // spec key
  std::string source;  // emitted CUDA C++
};

struct BuildStats {
  int hits = 0;
  int compiled = 0;
  double seconds = 0;
};

/// Builds every job on `threads` threads (0 = hardware concurrency), through `cache` when given.
/// Results are in job order; the first failure is returned after all jobs finish.
absl::StatusOr<std::vector<CompiledKernel>> build_kernels(const std::vector<KernelJob>& jobs,
                                                          const std::string& arch,
                                                          KernelCache* cache, int threads,
                                                          BuildStats* stats = nullptr);

}  // namespace kiln
