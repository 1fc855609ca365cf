// Timing one GEMM shape both ways on the GPU — cuBLASLt (GemmRunner) and a kiln GEMV kernel —
// as a decode step runs them: many launches in one CUDA graph, each over its own copy of the
// weights (rotated past L2), median of the graph's replays. This is the candidate measurement a
// timed pick at compile time or the autotuner (`kiln compile --tune`) calls per shape; it takes
// the kernel already compiled (the runtime never runs NVRTC: codegen compiles GemvSpec, see
// bench/gemv_bench.cc for the whole loop).
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "runtime/cuda/driver.h"
#include "runtime/cuda/gemm.h"

namespace kiln {

/// A loaded GEMV kernel (kernels/gemv.cuh entry: out, a, w[, bias][, residual], m) and its
/// launch geometry.
struct GemvLaunch {
  GpuKernel kernel;
  LaunchDims dims;
};

struct GemmTimingOptions {
  int replays = 20;                           ///< timed graph replays (median)
  int64_t rotate_bytes = int64_t{1} << 30;    ///< weight copies up to this many bytes in all
  int max_copies = 128;                       ///< and at most this many launches per graph
};

struct GemmTiming {
  int copies = 0;               ///< weight copies = launches per graph
  double cublas_us = 0;         ///< per GEMM
  std::optional<double> kiln_us;  ///< per GEMM, when a GEMV kernel was given
  int64_t weight_bytes = 0;     ///< N·K·sizeof(b)
  double cublas_weight_tbps() const { return weight_bytes / cublas_us / 1e6; }
  std::optional<double> kiln_weight_tbps() const {
    if (!kiln_us) return std::nullopt;
    return weight_bytes / *kiln_us / 1e6;
  }
};

/// Times `shape` (M = shape.m) with cuBLASLt and, when `gemv` is set, with that kernel (bias and
/// residual per the epilogue, the residual in its own buffer; weights a constant pattern, the
/// rest random). Errors name the shape.
absl::StatusOr<GemmTiming> time_gemm_both_ways(GpuDevice& device, GemmRunner& gemm,
                                               const GemmShape& shape, const GemvLaunch* gemv,
                                               const GemmTimingOptions& options = {});

/// Device-to-device copy bandwidth (TB/s, read + write bytes) over a `bytes` buffer: the ceiling
/// the GEMV's weight bandwidth is compared with.
absl::StatusOr<double> copy_bandwidth_tbps(GpuDevice& device, int64_t bytes = int64_t{1} << 30,
                                           int replays = 20);

}  // namespace kiln
