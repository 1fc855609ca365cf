// The GEMV kernel (kernels/gemv.cuh via codegen/families/gemv.h, compiled by NVRTC) on the GPU
// against an fp64 host product of the same rounded inputs: M = 1..16, every epilogue (the
// residual in its own buffer and in place), bf16 and f16, bf16/f32 outputs, odd N (partial
// 16-feature tiles), K not a multiple of 32 (a partial chunk), both row-tile shapes. Fresh random
// non-zero inputs; the whole 16-row output poisoned with NaN first, rows < M checked element by
// element, rows >= M checked still poisoned (never written). The SwiGLU epilogue (a merged
// [gate; up] weight in, silu(gate)·up out) against the host's silu of the two products, each
// rounded to the output type as the unfused GEMM rounds them. Skips with the reason when there is
// no GPU or no NVRTC. Also times nothing: speed is bench/gemv_bench.cc's job.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "codegen/families/gemv.h"
#include "codegen/kernel_source.h"
#include "codegen/nvrtc_compiler.h"
#include "models/dequantize.h"
#include "runtime/cuda/driver.h"
#include "runtime/cuda/gemm.h"
#include "runtime/cuda/gemm_timing.h"

namespace kiln {
namespace {

uint16_t to_half_bits(DType dt, float f) {
  if (dt == DType::kBF16) return f32_to_bf16(f);
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
};
Gpu& gpu() {
  static Gpu* g = [] {
    auto* g = new Gpu;
    if (!nvrtc_available()) {
      g->status = absl::UnavailableError("kiln was built without NVRTC");
      return g;
    }
    absl::StatusOr<GpuDevice> d = open_gpu();
    if (!d.ok()) {
      g->status = d.status();
      return g;
    }
    g->device = std::make_unique<GpuDevice>(std::move(*d));
    return g;
  }();
  return *g;
}

int64_t bytes_of(DType dt) { return dt == DType::kF32 ? 4 : 2; }

/// Uploads `n` random non-zero values in ±[0.05, 1) rounded to `dt` (f32 kept as is).
std::vector<float> random_buffer(GpuDevice& dev, DeviceBuffer& buf, DType dt, int64_t n,
                                 std::mt19937& rng) {
  std::uniform_real_distribution<float> u(0.05f, 1.0f);
  std::bernoulli_distribution neg(0.5);
  std::vector<float> vals(n);
  std::vector<uint16_t> bits(dt == DType::kF32 ? 0 : n);
  for (int64_t i = 0; i < n; ++i) {
    const float f = neg(rng) ? -u(rng) : u(rng);
    if (dt == DType::kF32) {
      vals[i] = f;
    } else {
      bits[i] = to_half_bits(dt, f);
      vals[i] = from_half_bits(dt, bits[i]);
    }
  }
  absl::StatusOr<DeviceBuffer> b = dev.alloc(bytes_of(dt) * n);
  EXPECT_TRUE(b.ok()) << b.status();
  buf = std::move(*b);
  const void* src = dt == DType::kF32 ? static_cast<const void*>(vals.data()) : bits.data();
  EXPECT_TRUE(dev.upload(buf.ptr(), src, bytes_of(dt) * n).ok());
  return vals;
}

std::vector<double> download(GpuDevice& dev, DevicePtr p, DType dt, int64_t n) {
  std::vector<double> out(n);
  if (dt == DType::kF32) {
    std::vector<float> f(n);
    EXPECT_TRUE(dev.download(f.data(), p, 4 * n).ok());
    for (int64_t i = 0; i < n; ++i) out[i] = f[i];
  } else {
    std::vector<uint16_t> h(n);
    EXPECT_TRUE(dev.download(h.data(), p, 2 * n).ok());
    for (int64_t i = 0; i < n; ++i) out[i] = from_half_bits(dt, h[i]);
  }
  return out;
}

struct Case {
  int64_t n, k;
  DType dt = DType::kBF16;
  DType out = DType::kBF16;
  GemmEpilogue epilogue = GemmEpilogue::kNone;
  bool in_place = false;
  int64_t row_tiles = 0;  // 0: gemv_spec_for's choice
  int64_t warps = 0, unroll = 0;  // likewise
  bool swiglu = false;            // n = 2F weight rows, F outputs
  bool prefetch = false;
  bool norm = false;              // the RMSNorm prologue: `a` is normalized in the kernel
};

double round_to(DType dt, double v) {
  if (dt == DType::kF32) return static_cast<float>(v);
  return from_half_bits(dt, to_half_bits(dt, static_cast<float>(v)));
}

// Compiles the case's spec once and runs it for every M in `ms`.
void run_case(const Case& c, const std::vector<int64_t>& ms) {
  GpuDevice& dev = *gpu().device;
  const bool has_bias =
      c.epilogue == GemmEpilogue::kBias || c.epilogue == GemmEpilogue::kBiasResidual;
  const bool has_res =
      c.epilogue == GemmEpilogue::kResidual || c.epilogue == GemmEpilogue::kBiasResidual;
  GemvSpec spec = gemv_spec_for(c.n, c.k, c.swiglu);
  if (c.row_tiles) spec.row_tiles = c.row_tiles;
  if (c.warps) spec.warps = c.warps;
  if (c.unroll) spec.unroll = c.unroll;
  spec.prefetch = c.prefetch;
  spec.norm = c.norm;
  spec.dtype = c.dt;
  spec.out_dtype = c.out;
  spec.bias_dtype = c.dt;
  spec.bias = has_bias;
  spec.residual = has_res;
  const std::string what = spec.key() + (c.in_place ? " in place" : "");
  const int64_t n_out = c.swiglu ? c.n / 2 : c.n;  // output features
  absl::StatusOr<std::string> src = emit_kernel_source(spec);
  ASSERT_TRUE(src.ok()) << src.status();
  absl::StatusOr<CompiledKernel> ck = nvrtc_compile(spec.key(), *src, dev.arch());
  ASSERT_TRUE(ck.ok()) << ck.status();
  EXPECT_EQ(ck->spill_bytes, 0) << what << ": " << ck->log;
  absl::StatusOr<GpuKernel> kernel = dev.load_kernel(ck->cubin, spec.key());
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  const LaunchRule rule = spec.rule();
  LaunchDims dims;
  dims.grid[0] = static_cast<unsigned>(std::stoll(rule.grid[0]));
  dims.block[0] = static_cast<unsigned>(std::stoll(rule.block[0]));

  constexpr int64_t kRows = kGemvMaxRows;
  std::mt19937 rng(static_cast<uint32_t>(c.n * 131 + c.k * 7 + static_cast<int>(c.epilogue)));
  DeviceBuffer a, w, bias, res, out;
  const std::vector<float> av = random_buffer(dev, a, c.dt, kRows * c.k, rng);
  const std::vector<float> wv = random_buffer(dev, w, c.dt, c.n * c.k, rng);
  const std::vector<float> biasv = random_buffer(dev, bias, c.dt, c.n, rng);
  // NORM: the GEMV's activations are y = round((x * rsqrt(mean(x^2) + eps)) * norm_w), rounded
  // once to the input type in fp32 as the rmsnorm kernel rounds them.
  DeviceBuffer norm_w;
  const std::vector<float> normv = random_buffer(dev, norm_w, c.dt, c.k, rng);
  constexpr float kEps = 1e-5f;
  std::vector<float> yv = av;
  if (c.norm) {
    for (int64_t i = 0; i < kRows; ++i) {
      double ss = 0;
      for (int64_t kk = 0; kk < c.k; ++kk) ss += static_cast<double>(av[i * c.k + kk]) * av[i * c.k + kk];
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / c.k + kEps));
      for (int64_t kk = 0; kk < c.k; ++kk) {
        yv[i * c.k + kk] = static_cast<float>(round_to(c.dt, av[i * c.k + kk] * inv * normv[kk]));
      }
    }
  }
  const double u_in = c.dt == DType::kBF16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
  const double u = c.out == DType::kBF16  ? std::ldexp(1.0, -8)
                   : c.out == DType::kF16 ? std::ldexp(1.0, -11)
                                          : std::ldexp(1.0, -24);
  for (int64_t m : ms) {
    // A fresh residual per M (in place it is overwritten), the output poisoned (all 16 rows).
    const std::vector<float> resv = random_buffer(dev, res, c.out, kRows * n_out, rng);
    const int64_t out_bytes = bytes_of(c.out) * kRows * n_out;
    DevicePtr out_ptr = 0;
    if (c.in_place) {
      out_ptr = res.ptr();
      // Rows >= m of the in-place buffer must stay the residual: poison nothing, check it below.
    } else {
      absl::StatusOr<DeviceBuffer> o = dev.alloc(out_bytes);
      ASSERT_TRUE(o.ok());
      out = std::move(*o);
      ASSERT_TRUE(dev.fill_bytes(out.ptr(), 0xFF, out_bytes).ok());  // NaN
      out_ptr = out.ptr();
    }
    KernelArgs args;
    args.ptr(out_ptr).ptr(a.ptr()).ptr(w.ptr());
    if (has_bias) args.ptr(bias.ptr());
    if (has_res) args.ptr(res.ptr());
    args.i32(static_cast<int32_t>(m));
    if (c.norm) args.ptr(norm_w.ptr()).f32(kEps);
    ASSERT_TRUE(dev.launch(*kernel, dims, args).ok());
    absl::Status sync = dev.synchronize();
    ASSERT_TRUE(sync.ok()) << what << " M=" << m << ": " << sync;
    const std::vector<double> got = download(dev, out_ptr, c.out, kRows * n_out);
    int64_t bad = 0, touched = 0;
    double max_err = 0;
    for (int64_t i = 0; i < kRows; ++i) {
      for (int64_t j = 0; j < n_out; ++j) {
        const double v = got[i * n_out + j];
        if (i >= m) {
          // Never written: still NaN, or (in place) still the residual's value.
          if (c.in_place ? v != resv[i * n_out + j] : !std::isnan(v)) ++touched;
          continue;
        }
        auto product = [&](int64_t row, double& mag) {
          double sum = 0;
          mag = 0;
          for (int64_t kk = 0; kk < c.k; ++kk) {
            const double p = static_cast<double>(yv[i * c.k + kk]) * wv[row * c.k + kk];
            sum += p;
            mag += std::fabs(p);
          }
          return sum;
        };
        double mag = 0, ref = product(j, mag), tol = 0;
        if (c.swiglu) {
          // gate and up each rounded to the output type (an ulp apart at most from the GPU's
          // rounding of its own fp32 sums), then silu(gate)·up in fp32 and one more rounding.
          double mag_up = 0;
          const double gate = round_to(c.out, ref), up = round_to(c.out, product(n_out + j, mag_up));
          const double silu = gate / (1 + std::exp(-gate));
          ref = silu * up;
          const double norm_term = c.norm ? 2 * u_in : 0;  // see the NORM note below
          const double d_gate = 2 * u * std::fabs(gate) + (1e-5 + norm_term) * mag + 1e-6;
          const double d_up = 2 * u * std::fabs(up) + (1e-5 + norm_term) * mag_up + 1e-6;
          tol = u * std::fabs(ref) + 1.1 * d_gate * std::fabs(up) + std::fabs(silu) * d_up + 1e-6;
        } else {
          if (has_bias) ref += biasv[j];
          if (has_res) ref += resv[i * n_out + j];
          // One rounding to the output type after an fp32 tensor-core sum (its accumulation
          // error bounded as in gemm_gpu_test: 1e-5 of the sum of |terms|).
          tol = u * std::fabs(ref) + 1e-5 * mag + 1e-6;
          // NORM: the GPU's rsqrtf may round an activation to the neighbouring value (an ulp of
          // the input type apart) where the host's exact inverse root does not.
          if (c.norm) tol += 2 * u_in * mag;
        }
        const double err = std::fabs(v - ref);
        if (!(err <= tol)) ++bad;
        if (std::isfinite(err)) max_err = std::max(max_err, err);
      }
    }
    EXPECT_EQ(bad, 0) << what << " M=" << m << ": " << bad << " of " << m * n_out
                      << " outputs out of bounds, max |err| " << max_err;
    EXPECT_EQ(touched, 0) << what << " M=" << m << ": wrote " << touched
                          << " elements of rows >= M";
  }
}

#define REQUIRE_GPU()                                                                         \
  if (!gpu().status.ok()) GTEST_SKIP() << "GPU or NVRTC unavailable: " << gpu().status.message()

std::vector<int64_t> all_m() {
  std::vector<int64_t> ms;
  for (int64_t m = 1; m <= kGemvMaxRows; ++m) ms.push_back(m);
  return ms;
}

TEST(GemvGpu, EveryRowCountOddN) {
  REQUIRE_GPU();
  run_case({1001, 576}, all_m());                       // 1001 = 62 tiles + 9: a partial tile
  run_case({8197, 264, DType::kBF16, DType::kBF16, GemmEpilogue::kNone, false, 2}, all_m());
  // The block shapes gemv_bench --sweep times: 4 warps, unroll 8 (more chunks than K has).
  run_case({1001, 1032, DType::kBF16, DType::kBF16, GemmEpilogue::kNone, false, 1, 4, 8}, all_m());
  run_case({1001, 4096, DType::kBF16, DType::kBF16, GemmEpilogue::kBias, false, 2, 4, 8},
           {1, 8, 9, 16});
  // Software pipelining: an odd number of passes (K = 1032: 33 chunks, 16 per pass at 8 warps x
  // unroll 2), an even one (K = 4096 at 4 warps x unroll 1: 128 chunks, 32 passes), a partial
  // chunk, and with the SwiGLU epilogue.
  for (Case c : {Case{1001, 1032, DType::kBF16, DType::kBF16, GemmEpilogue::kNone, false, 1, 8, 2},
                 Case{517, 4096, DType::kF16, DType::kF16, GemmEpilogue::kResidual, false, 2, 4, 1},
                 Case{2 * 517, 1032, DType::kBF16, DType::kBF16, GemmEpilogue::kNone, false, 2, 8, 2}}) {
    c.prefetch = true;
    c.swiglu = c.n == 2 * 517;
    run_case(c, {1, 8, 9, 16});
  }
}

TEST(GemvGpu, Epilogues) {
  REQUIRE_GPU();
  for (GemmEpilogue e : {GemmEpilogue::kNone, GemmEpilogue::kBias, GemmEpilogue::kResidual,
                         GemmEpilogue::kBiasResidual}) {
    for (DType dt : {DType::kBF16, DType::kF16}) {
      run_case({333, 1032, dt, dt, e}, {1, 7, 16});  // K = 1032: a partial 32-element chunk
      if (e == GemmEpilogue::kResidual || e == GemmEpilogue::kBiasResidual) {
        run_case({333, 1032, dt, dt, e, /*in_place=*/true}, {1, 9, 16});
      }
    }
  }
}

TEST(GemvGpu, SwigluEpilogue) {
  REQUIRE_GPU();
  Case c{3072, 576};  // SmolLM2's merged gate/up: F = 1536
  c.swiglu = true;
  run_case(c, all_m());
  c = {2 * 1001, 1032, DType::kF16, DType::kF16};  // a partial feature tile and K chunk, f16
  c.swiglu = true;
  run_case(c, {1, 8, 9, 16});
  c = {2 * 333, 4096};  // four row tiles: two gate tiles and their two up tiles per block
  c.swiglu = true;
  c.row_tiles = 4;
  c.unroll = 1;
  run_case(c, {1, 5, 16});
}

// The RMSNorm prologue: the kernel reads the norm's input and normalizes it itself (every M,
// a partial K chunk, with the residual epilogue, with the SwiGLU epilogue and prefetching).
TEST(GemvGpu, NormPrologue) {
  REQUIRE_GPU();
  Case c{960, 576};  // SmolLM2's merged QKV
  c.norm = true;
  run_case(c, all_m());
  c = {333, 1032, DType::kF16, DType::kF16, GemmEpilogue::kResidual};
  c.norm = true;
  run_case(c, {1, 9, 16});
  c = {2 * 517, 1032};
  c.norm = c.swiglu = c.prefetch = true;
  c.row_tiles = 2, c.warps = 8, c.unroll = 2;
  run_case(c, {1, 8, 16});
}

TEST(GemvGpu, F32OutputAndLargeShape) {
  REQUIRE_GPU();
  run_case({517, 2048, DType::kBF16, DType::kF32}, {1, 3, 16});        // LM-head style logits
  run_case({4099, 4096, DType::kBF16, DType::kBF16, GemmEpilogue::kResidual}, {1, 16});
}

TEST(GemvGpu, TimingBothWaysReportsBoth) {
  REQUIRE_GPU();
  GpuDevice& dev = *gpu().device;
  absl::StatusOr<std::unique_ptr<GemmRunner>> gemm = GemmRunner::create(dev);
  if (!gemm.ok()) GTEST_SKIP() << "cuBLASLt unavailable: " << gemm.status().message();
  GemvSpec spec = gemv_spec_for(2048, 2048);
  absl::StatusOr<std::string> src = emit_kernel_source(spec);
  ASSERT_TRUE(src.ok());
  absl::StatusOr<CompiledKernel> ck = nvrtc_compile(spec.key(), *src, dev.arch());
  ASSERT_TRUE(ck.ok()) << ck.status();
  absl::StatusOr<GpuKernel> k = dev.load_kernel(ck->cubin, spec.key());
  ASSERT_TRUE(k.ok());
  GemvLaunch l{*k, {}};
  l.dims.grid[0] = 2048 / 16;
  l.dims.block[0] = static_cast<unsigned>(spec.threads());
  GemmTimingOptions o;
  o.replays = 3;
  o.max_copies = 4;
  absl::StatusOr<GemmTiming> t = time_gemm_both_ways(dev, **gemm, GemmShape{4, 2048, 2048}, &l, o);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->copies, 4);
  EXPECT_GT(t->cublas_us, 0);
  ASSERT_TRUE(t->kiln_us.has_value());
  EXPECT_GT(*t->kiln_us, 0);
  EXPECT_EQ(t->weight_bytes, 2048 * 2048 * 2);
}

}  // namespace
}  // namespace kiln
