// Tuning trial inputs (see device_data.h).
#include "codegen/tune/device_data.h"

#include <algorithm>

#include "models/dequantize.h"

namespace kiln::tune {

std::vector<uint16_t> random_halves(DType dtype, size_t count, std::mt19937& rng) {
  std::vector<uint16_t> v(count);
  const bool bf16 = dtype == DType::kBF16;
  for (uint16_t& x : v) {
    const uint32_t r = rng();
    // Exponents 2^-2 and 2^-1 (bf16: biased 125/126, f16: 13/14) with a random mantissa.
    x = bf16 ? static_cast<uint16_t>((r & 0x807F) | ((125 + ((r >> 8) & 1)) << 7))
             : static_cast<uint16_t>((r & 0x83FF) | ((13 + ((r >> 12) & 1)) << 10));
  }
  return v;
}

absl::StatusOr<DeviceBuffer> random_buffer(GpuDevice& gpu, DType dtype, size_t bytes,
                                           uint32_t seed) {
  std::mt19937 rng(seed);
  const std::vector<uint16_t> pattern = random_halves(dtype, (1 << 20) / 2, rng);
  absl::StatusOr<DeviceBuffer> buf = gpu.alloc(std::max<size_t>(bytes, 16));
  if (!buf.ok()) return buf.status();
  const size_t chunk = pattern.size() * 2;
  for (size_t off = 0; off < bytes; off += chunk) {
    if (absl::Status s = gpu.upload(buf->ptr() + off, pattern.data(), std::min(chunk, bytes - off));
        !s.ok()) {
      return s;
    }
  }
  return buf;
}

absl::StatusOr<DeviceBuffer> upload_ints(GpuDevice& gpu, const std::vector<int32_t>& values) {
  absl::StatusOr<DeviceBuffer> buf = gpu.alloc(std::max<size_t>(values.size() * 4, 16));
  if (!buf.ok()) return buf.status();
  if (absl::Status s = gpu.upload(buf->ptr(), values.data(), values.size() * 4); !s.ok()) return s;
  return buf;
}

absl::StatusOr<std::vector<float>> download_halves(GpuDevice& gpu, DevicePtr src, DType dtype,
                                                   size_t count) {
  std::vector<uint16_t> raw(count);
  if (absl::Status s = gpu.download(raw.data(), src, count * 2); !s.ok()) return s;
  std::vector<float> out(count);
  for (size_t i = 0; i < count; ++i) {
    out[i] = dtype == DType::kBF16 ? bf16_to_f32(raw[i]) : f16_to_f32(raw[i]);
  }
  return out;
}

absl::StatusOr<double> time_us(GpuDevice& gpu, const std::function<absl::Status()>& fn, int reps) {
  for (int i = 0; i < 3; ++i) {
    if (absl::Status s = fn(); !s.ok()) return s;
  }
  if (absl::Status s = gpu.synchronize(); !s.ok()) return s;
  absl::StatusOr<float> ms = gpu.time_ms([&]() -> absl::Status {
    for (int i = 0; i < reps; ++i) {
      if (absl::Status s = fn(); !s.ok()) return s;
    }
    return absl::OkStatus();
  });
  if (!ms.ok()) return ms.status();
  return 1000.0 * *ms / reps;
}

}  // namespace kiln::tune
