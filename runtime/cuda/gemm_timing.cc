// GEMM timing both ways (see gemm_timing.h).
#include "runtime/cuda/gemm_timing.h"

#include <algorithm>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kiln {
namespace {

int64_t dtype_bytes(DType dt) { return dt == DType::kF32 ? 4 : 2; }

// Random bit patterns of small finite 16-bit floats (sign, exponent near 1, random mantissa):
// timing needs no particular values, only no NaN/Inf slow paths. f32 buffers get the same
// halves as their high 16 bits (bf16-like values).
absl::StatusOr<DeviceBuffer> random_buffer(GpuDevice& dev, int64_t bytes, std::mt19937& rng) {
  absl::StatusOr<DeviceBuffer> b = dev.alloc(static_cast<size_t>(bytes));
  if (!b.ok()) return b.status();
  std::vector<uint16_t> bits(static_cast<size_t>(bytes / 2));
  std::uniform_int_distribution<int> mant(0, 0x7f), sign(0, 1);
  for (uint16_t& h : bits) h = static_cast<uint16_t>((sign(rng) << 15) | (0x3c << 7) | mant(rng));
  if (absl::Status s = dev.upload(b->ptr(), bits.data(), static_cast<size_t>(bytes)); !s.ok()) {
    return s;
  }
  return b;
}

// Median ms of `replays` replays of a graph capturing `enqueue`.
absl::StatusOr<double> time_graph(GpuDevice& dev, const std::function<absl::Status()>& enqueue,
                                  int replays) {
  if (absl::Status s = enqueue(); !s.ok()) return s;  // warm-up outside the graph (lazy init)
  if (absl::Status s = dev.synchronize(); !s.ok()) return s;
  if (absl::Status s = dev.begin_capture(); !s.ok()) return s;
  absl::Status run = enqueue();
  absl::StatusOr<void*> exec = dev.end_capture();
  if (!run.ok()) {
    if (exec.ok()) dev.destroy_graph(*exec);
    return run;
  }
  if (!exec.ok()) return exec.status();
  std::vector<double> ms;
  absl::Status err;
  for (int i = 0; i < replays + 3 && err.ok(); ++i) {
    absl::StatusOr<float> t = dev.time_ms([&] { return dev.replay(*exec); });
    if (!t.ok()) err = t.status();
    else if (i >= 3) ms.push_back(*t);
  }
  dev.destroy_graph(*exec);
  if (!err.ok()) return err;
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

absl::StatusOr<GemmTiming> time_gemm_both_ways(GpuDevice& dev, GemmRunner& gemm,
                                               const GemmShape& shape, const GemvLaunch* gemv,
                                               const GemmTimingOptions& o) {
  auto fail = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat("timing ", shape.describe(), ": ", s.message()));
  };
  if (shape.m < 1 || shape.n < 1 || shape.k < 1 || o.replays < 1) {
    return fail(absl::InvalidArgumentError("empty shape or no replays"));
  }
  const bool bias =
      shape.epilogue == GemmEpilogue::kBias || shape.epilogue == GemmEpilogue::kBiasResidual;
  const bool residual =
      shape.epilogue == GemmEpilogue::kResidual || shape.epilogue == GemmEpilogue::kBiasResidual;
  GemmTiming t;
  t.weight_bytes = shape.n * shape.k * dtype_bytes(shape.b_dtype);
  t.copies = static_cast<int>(
      std::clamp<int64_t>(o.rotate_bytes / std::max<int64_t>(t.weight_bytes, 1), 1, o.max_copies));
  std::mt19937 rng(1234);
  // The weight copies (up to a GiB) are filled on the device with one finite pattern (0x3c3c:
  // bf16 0.0115, f16 1.06): a host upload of random bytes would take seconds per shape, and the
  // kernels' speed does not depend on the values. Activations, bias and residual are random.
  std::vector<DeviceBuffer> weights;
  for (int i = 0; i < t.copies; ++i) {
    absl::StatusOr<DeviceBuffer> w = dev.alloc(static_cast<size_t>(t.weight_bytes));
    if (!w.ok()) return fail(w.status());
    if (absl::Status s = dev.fill_bytes(w->ptr(), 0x3c, static_cast<size_t>(t.weight_bytes));
        !s.ok()) {
      return fail(s);
    }
    weights.push_back(std::move(*w));
  }
  absl::StatusOr<DeviceBuffer> a =
      random_buffer(dev, shape.m * shape.k * dtype_bytes(shape.a_dtype), rng);
  absl::StatusOr<DeviceBuffer> bias_buf =
      random_buffer(dev, std::max<int64_t>(shape.n * dtype_bytes(shape.bias_dtype), 16), rng);
  const int64_t out_bytes = shape.m * shape.n * dtype_bytes(shape.out_dtype);
  absl::StatusOr<DeviceBuffer> res = random_buffer(dev, out_bytes, rng);
  absl::StatusOr<DeviceBuffer> out = dev.alloc(static_cast<size_t>(out_bytes));
  for (const auto* b : {&a, &bias_buf, &res, &out}) {
    if (!b->ok()) return fail(b->status());
  }
  absl::StatusOr<double> cublas = time_graph(
      dev,
      [&]() -> absl::Status {
        for (const DeviceBuffer& w : weights) {
          GemmOperands ops{a->ptr(), w.ptr(), bias_buf->ptr(), res->ptr(), out->ptr()};
          if (absl::Status s = gemm.run(shape, ops, dev.stream()); !s.ok()) return s;
        }
        return absl::OkStatus();
      },
      o.replays);
  if (!cublas.ok()) return fail(cublas.status());
  t.cublas_us = *cublas * 1e3 / t.copies;
  if (gemv != nullptr) {
    absl::StatusOr<double> kiln = time_graph(
        dev,
        [&]() -> absl::Status {
          for (const DeviceBuffer& w : weights) {
            KernelArgs args;
            args.ptr(out->ptr()).ptr(a->ptr()).ptr(w.ptr());
            if (bias) args.ptr(bias_buf->ptr());
            if (residual) args.ptr(res->ptr());
            args.i32(static_cast<int32_t>(shape.m));
            if (absl::Status s = dev.launch(gemv->kernel, gemv->dims, args); !s.ok()) return s;
          }
          return absl::OkStatus();
        },
        o.replays);
    if (!kiln.ok()) return fail(kiln.status());
    t.kiln_us = *kiln * 1e3 / t.copies;
  }
  return t;
}

absl::StatusOr<double> copy_bandwidth_tbps(GpuDevice& dev, int64_t bytes, int replays) {
  absl::StatusOr<DeviceBuffer> x = dev.alloc(static_cast<size_t>(bytes));
  absl::StatusOr<DeviceBuffer> y = dev.alloc(static_cast<size_t>(bytes));
  if (!x.ok()) return x.status();
  if (!y.ok()) return y.status();
  if (absl::Status s = dev.fill_bytes(x->ptr(), 0x3c, static_cast<size_t>(bytes)); !s.ok()) return s;
  absl::StatusOr<double> ms = time_graph(
      dev, [&] { return dev.copy_async(y->ptr(), x->ptr(), static_cast<size_t>(bytes)); },
      replays);
  if (!ms.ok()) return ms.status();
  return 2.0 * static_cast<double>(bytes) / *ms / 1e9;
}

}  // namespace kiln
