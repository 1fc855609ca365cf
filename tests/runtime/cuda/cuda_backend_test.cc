// CudaBackend on a machine without a usable GPU: creating it is an Unavailable error that says no
// GPU was found (what `kiln run --device cuda` prints), never a crash or a link failure. On a
// machine with a GPU the GPU tests (cuda_backend_gpu_test.cc) cover the backend instead.
#include "runtime/cuda/cuda_backend.h"

#include <gtest/gtest.h>

namespace kiln {
namespace {

TEST(CudaBackend, WithoutAGpuSaysNoGpuWasFound) {
  if (open_gpu().ok()) GTEST_SKIP() << "a GPU is present: covered by cuda_backend_gpu_test";
  Plan plan;
  plan.arch = "sm_90a";
  absl::StatusOr<std::unique_ptr<CudaBackend>> b = CudaBackend::create(plan, {}, nullptr);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kUnavailable) << b.status();
  EXPECT_NE(b.status().message().find("no GPU found"), std::string::npos) << b.status();
}

}  // namespace
}  // namespace kiln
