// Inputs the GPU trials of the tuning families share: random 16-bit floats made on the host and
// uploaded, and the decoding of a 16-bit output for the numeric check.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/dtype.h"
#include "runtime/cuda/driver.h"

namespace kiln::tune {

/// `count` random bf16/f16 values of magnitude in [0.25, 1) and either sign (a random mantissa
/// under a fixed pair of exponents: no rounding code, never zero, never special), as raw bits.
std::vector<uint16_t> random_halves(DType dtype, size_t count, std::mt19937& rng);

/// A device buffer of `bytes` filled with a random 1 MiB pattern of `dtype` values, repeated
/// (uploading the whole buffer, so the pages a trial reads are all distinct memory).
absl::StatusOr<DeviceBuffer> random_buffer(GpuDevice& gpu, DType dtype, size_t bytes,
                                           uint32_t seed);

/// A device copy of `values`.
absl::StatusOr<DeviceBuffer> upload_ints(GpuDevice& gpu, const std::vector<int32_t>& values);

/// Downloads `count` bf16/f16 values as floats.
absl::StatusOr<std::vector<float>> download_halves(GpuDevice& gpu, DevicePtr src, DType dtype,
                                                   size_t count);

/// Microseconds per call of `fn` (a few warm-up calls, then the mean of `reps` inside one pair
/// of events).
absl::StatusOr<double> time_us(GpuDevice& gpu, const std::function<absl::Status()>& fn,
                               int reps = 20);

}  // namespace kiln::tune
