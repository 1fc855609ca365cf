// The device, the kernel cache and the compiled kernels the GPU kernel tests of one process
// share, opened once; REQUIRE_GPU() skips a test with the reason when there is no usable GPU.
#pragma once

#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "codegen/kernel_cache.h"
#include "codegen/nvrtc_compiler.h"
#include "runtime/cuda/driver.h"

namespace kiln::testing {

struct GpuContext {
  absl::Status status;
  std::optional<GpuDevice> device;
  std::unique_ptr<KernelCache> cache;
  std::map<std::string, GpuKernel> kernels;  // by spec key
};

inline GpuContext& gpu() {
  static GpuContext* ctx = [] {
    auto* c = new GpuContext;
    if (!nvrtc_available()) {
      c->status = absl::UnavailableError("built without NVRTC: GPU kernel tests skip");
      return c;
    }
    absl::StatusOr<GpuDevice> d = open_gpu();
    if (!d.ok()) {
      c->status = d.status();
      return c;
    }
    c->device.emplace(std::move(*d));
    c->cache = std::make_unique<KernelCache>(std::string(KILN_BUILD_DIR) + "/gpu-kernel-cache");
    std::printf("[ kiln gpu ] %s\n", c->device->describe().c_str());
    return c;
  }();
  return *ctx;
}

}  // namespace kiln::testing

#define REQUIRE_GPU()                                                                 \
  do {                                                                                \
    if (!::kiln::testing::gpu().status.ok()) {                                        \
      GTEST_SKIP() << "GPU unavailable: " << ::kiln::testing::gpu().status.message(); \
    }                                                                                 \
  } while (0)
