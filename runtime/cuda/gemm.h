// GemmRunner: the plan's GEMMs on cuBLASLt, loaded with dlopen("libcublasLt.so.13") like the
// driver (runtime/cuda/driver.h), so a binary still starts where CUDA is absent. Computes
// out[M, N] = a[M, K]·b[N, K]ᵀ (+ bias[N]) (+ residual[M, N] through beta = 1) in bf16/f16 with
// fp32 accumulation; the algorithm is cuBLASLt's heuristic pick, asked once per
// (shape, dtypes, epilogue) and cached with its descriptors, over one workspace sized at creation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ir/dtype.h"
#include "plan/plan.h"
#include "runtime/cuda/driver.h"

namespace kiln {

/// What selects an algorithm: everything but the pointers.
struct GemmShape {
  int64_t m = 0, n = 0, k = 0;
  DType a_dtype = DType::kBF16, b_dtype = DType::kBF16, out_dtype = DType::kBF16;
  DType bias_dtype = DType::kBF16;  ///< only read with a bias epilogue
  GemmEpilogue epilogue = GemmEpilogue::kNone;

  bool operator==(const GemmShape&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const GemmShape& s) {
    return H::combine(std::move(h), s.m, s.n, s.k, s.a_dtype, s.b_dtype, s.out_dtype, s.bias_dtype,
                      s.epilogue);
  }
  /// "gemm 16x2048x576 bf16 bias" for messages.
  std::string describe() const;
};

/// Device addresses of one GEMM. `bias` and `residual` are read only when the epilogue says so;
/// `residual` may equal `out` (an in-place residual add).
struct GemmOperands {
  DevicePtr a = 0, b = 0, bias = 0, residual = 0, out = 0;
};

struct CublasLtApi;  // the dlsym'd function table (gemm.cc)

class GemmRunner {
 public:
  /// Loads cuBLASLt, creates its handle and a `workspace_bytes` workspace on `device` (which must
  /// outlive the runner). Unavailable when libcublasLt.so.13 cannot be loaded.
  static absl::StatusOr<std::unique_ptr<GemmRunner>> create(GpuDevice& device,
                                                            size_t workspace_bytes = 32 << 20);
  ~GemmRunner();

  /// Enqueues one GEMM on `stream` (a CUstream; null = the device's stream). The first call for
  /// a shape asks the heuristic; an error names the shape and cuBLASLt's status.
  absl::Status run(const GemmShape& shape, const GemmOperands& operands, void* stream);

  /// Distinct shapes whose algorithm is cached.
  size_t cached_shapes() const { return plans_.size(); }
  size_t workspace_bytes() const { return workspace_.bytes(); }

 private:
  struct ShapePlan;  // descriptors + the chosen algorithm
  GemmRunner() = default;
  absl::StatusOr<ShapePlan*> plan_for(const GemmShape& shape);

  std::shared_ptr<const CublasLtApi> api_;
  void* handle_ = nullptr;  // cublasLtHandle_t
  GpuDevice* device_ = nullptr;
  DeviceBuffer workspace_;
  absl::flat_hash_map<GemmShape, std::unique_ptr<ShapePlan>> plans_;
};

}  // namespace kiln
