// GemmRunner on the GPU: every epilogue (none, bias, residual via beta = 1, bias + residual; the
// residual in place and in its own buffer) in bf16 and f16, at decode-like and prefill-like M,
// against an fp64 host product of the same rounded inputs (one rounding to the output dtype; one
// more in place, where cuBLASLt rounds the product before adding C). Fresh random inputs, the
// output poisoned with NaN first. Skips with the reason when there is no GPU or no cuBLASLt.
#include "runtime/cuda/gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "models/dequantize.h"
#include "runtime/cuda/driver.h"

namespace kiln {
namespace {

uint16_t to_half_bits(DType dt, float f) {
  if (dt == DType::kBF16) return f32_to_bf16(f);
  // f16 round-to-nearest-even for the normal range the test draws from.
  uint32_t b;
  std::memcpy(&b, &f, 4);
  const uint32_t sign = (b >> 16) & 0x8000;
  if (std::fabs(f) < 6.2e-5f) return static_cast<uint16_t>(sign);
  const uint32_t exp = ((b >> 23) & 0xff) - 127 + 15, mant = b & 0x7fffff;
  uint32_t h = sign | (exp << 10) | (mant >> 13);
  if ((mant & 0x1fff) > 0x1000 || ((mant & 0x1fff) == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(h);
}

float from_half_bits(DType dt, uint16_t h) {
  return dt == DType::kBF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

struct Gpu {
  absl::Status status;
  std::unique_ptr<GpuDevice> device;
  std::unique_ptr<GemmRunner> gemm;
};

Gpu& gpu() {
  static Gpu* g = [] {
    auto* g = new Gpu;
    absl::StatusOr<GpuDevice> d = open_gpu();
    if (!d.ok()) {
      g->status = d.status();
      return g;
    }
    g->device = std::make_unique<GpuDevice>(std::move(*d));
    absl::StatusOr<std::unique_ptr<GemmRunner>> r = GemmRunner::create(*g->device);
    if (!r.ok()) {
      g->status = r.status();
      return g;
    }
    g->gemm = std::move(*r);
    return g;
  }();
  return *g;
}

/// Uploads `n` random values in [-1, 1) rounded to `dt`; returns their float values.
std::vector<float> random_buffer(GpuDevice& dev, DeviceBuffer& buf, DType dt, int64_t n,
                                 std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> vals(n);
  std::vector<uint16_t> bits(n);
  for (int64_t i = 0; i < n; ++i) {
    bits[i] = to_half_bits(dt, u(rng));
    vals[i] = from_half_bits(dt, bits[i]);
  }
  absl::StatusOr<DeviceBuffer> b = dev.alloc(2 * n);
  EXPECT_TRUE(b.ok()) << b.status();
  buf = std::move(*b);
  EXPECT_TRUE(dev.upload(buf.ptr(), bits.data(), 2 * n).ok());
  return vals;
}

struct Case {
  int64_t m, n, k;
  DType dt;
  GemmEpilogue epilogue;
  bool in_place;  // residual == out
};

void run_case(const Case& c) {
  Gpu& g = gpu();
  GpuDevice& dev = *g.device;
  std::mt19937 rng(static_cast<uint32_t>(c.m * 131 + c.n * 7 + c.k + static_cast<int>(c.epilogue)));
  DeviceBuffer a, b, bias, res, out;
  const std::vector<float> av = random_buffer(dev, a, c.dt, c.m * c.k, rng);
  const std::vector<float> bv = random_buffer(dev, b, c.dt, c.n * c.k, rng);
  const std::vector<float> biasv = random_buffer(dev, bias, c.dt, c.n, rng);
  const std::vector<float> resv = random_buffer(dev, res, c.dt, c.m * c.n, rng);
  const bool has_bias =
      c.epilogue == GemmEpilogue::kBias || c.epilogue == GemmEpilogue::kBiasResidual;
  const bool has_res =
      c.epilogue == GemmEpilogue::kResidual || c.epilogue == GemmEpilogue::kBiasResidual;
  DevicePtr out_ptr = 0;
  if (has_res && c.in_place) {
    out_ptr = res.ptr();
  } else {
    absl::StatusOr<DeviceBuffer> o = dev.alloc(2 * c.m * c.n);
    ASSERT_TRUE(o.ok());
    out = std::move(*o);
    ASSERT_TRUE(dev.fill_bytes(out.ptr(), 0xFF, 2 * c.m * c.n).ok());  // NaN poison
    out_ptr = out.ptr();
  }
  GemmShape shape{c.m, c.n, c.k, c.dt, c.dt, c.dt, c.dt, c.epilogue};
  GemmOperands ops{a.ptr(), b.ptr(), bias.ptr(), res.ptr(), out_ptr};
  absl::Status s = g.gemm->run(shape, ops, nullptr);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(dev.synchronize().ok());
  std::vector<uint16_t> got(c.m * c.n);
  ASSERT_TRUE(dev.download(got.data(), out_ptr, 2 * c.m * c.n).ok());
  int64_t bad = 0;
  double max_err = 0;
  // fp32 accumulation then one rounding to the output dtype: the error is the output's rounding
  // (relative 2^-8 for bf16, 2^-11 for f16) plus accumulation error ~ sqrt(k) * 2^-24 * |terms|.
  const double u = c.dt == DType::kBF16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = 0; j < c.n; ++j) {
      double ref = 0, mag = 0;
      for (int64_t kk = 0; kk < c.k; ++kk) {
        ref += static_cast<double>(av[i * c.k + kk]) * bv[j * c.k + kk];
        mag += std::fabs(static_cast<double>(av[i * c.k + kk]) * bv[j * c.k + kk]);
      }
      if (has_bias) ref += biasv[j];
      const double product = ref;
      if (has_res) ref += resv[i * c.n + j];
      const double v = from_half_bits(c.dt, got[i * c.n + j]);
      const double err = std::fabs(v - ref);
      // In place (C == D) cuBLASLt rounds the product to the output dtype before adding C (seen
      // on an H200: errors up to two roundings, identical run to run): one more rounding.
      const double rounding =
          u * (std::fabs(ref) + (c.in_place && has_res ? std::fabs(product) : 0.0));
      const double tol = rounding + 1e-5 * mag + 1e-6;
      if (!(err <= tol)) ++bad;
      if (std::isfinite(err)) max_err = std::max(max_err, err);
    }
  }
  EXPECT_EQ(bad, 0) << shape.describe() << (c.in_place ? " in place" : "") << ": " << bad << " of "
                    << c.m * c.n << " outputs out of bounds, max |err| " << max_err;
}

TEST(GemmGpu, EpiloguesMatchHostProduct) {
  if (!gpu().status.ok()) GTEST_SKIP() << "GPU or cuBLASLt unavailable: " << gpu().status.message();
  for (DType dt : {DType::kBF16, DType::kF16}) {
    for (GemmEpilogue e : {GemmEpilogue::kNone, GemmEpilogue::kBias, GemmEpilogue::kResidual,
                           GemmEpilogue::kBiasResidual}) {
      for (int64_t m : {1, 5, 77}) {
        run_case({m, 192, 320, dt, e, false});
        if (e == GemmEpilogue::kResidual || e == GemmEpilogue::kBiasResidual) {
          run_case({m, 192, 320, dt, e, true});
        }
      }
    }
  }
  // One algorithm per distinct shape, asked once: the cases above reuse 2 x 4 x 3 shapes.
  EXPECT_EQ(gpu().gemm->cached_shapes(), 24u);
}

TEST(GemmGpu, UnsupportedDtypeIsAnError) {
  if (!gpu().status.ok()) GTEST_SKIP() << "GPU or cuBLASLt unavailable: " << gpu().status.message();
  GemmShape shape{
      4, 64, 64, DType::kI32, DType::kBF16, DType::kBF16, DType::kBF16, GemmEpilogue::kNone};
  absl::Status s = gpu().gemm->run(shape, {}, nullptr);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("i32"), std::string::npos) << s;
}

}  // namespace
}  // namespace kiln
