// Cascade attention on the GPU: the prefix kernel plus the decode kernel's CASCADE form (suffixes,
// merged with the prefix partials by the last split) against kiln's plain split-KV decode kernel
// on the same step and against the CPU reference (runtime/reference/cascade_attention.h, which
// equals plain paged attention), over random prefix/suffix splits including empty suffixes,
// prefixes ending mid-page and sequences outside the prefix; head_dim 64/128, GQA 1/4/8, page
// sizes 1/16/64, bf16 and f16. Outputs are NaN-poisoned first; the split counters must be zero
// again after each launch. With KILN_CASCADE_BENCH=1, CascadeGpu.DecodeSpeed times cascade
// against plain decode for a shared prefix of 1k/8k/32k tokens at batch 16/64/256 (the table
// bench/gpu/cascade.sh prints). Without a GPU driver every test skips, saying why.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "codegen/families/cascade_attention.h"
#include "codegen/families/flash_attention_decode.h"
#include "codegen/kernel_cache.h"
#include "codegen/kernel_source.h"
#include "codegen/nvrtc_compiler.h"
#include "models/dequantize.h"
#include "runtime/cuda/driver.h"
#include "tests/kernels/gpu_context.h"
#include "runtime/kv/cascade_layout.h"
#include "runtime/reference/cascade_attention.h"
#include "tests/runtime/kv/cascade_steps.h"

namespace kiln {
namespace {

using testing::gpu;
using testing::GpuContext;

uint16_t encode16(DType dt, float x) {
  if (dt == DType::kBF16) return f32_to_bf16(x);
  const _Float16 h = static_cast<_Float16>(x);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
float decode16(DType dt, uint16_t b) { return dt == DType::kBF16 ? bf16_to_f32(b) : f16_to_f32(b); }

// The three kernels of one (dtype, head_dim, group): plain decode, cascade prefix and suffix.
struct Kernels {
  std::shared_ptr<FlashAttentionDecodeSpec> decode;
  std::shared_ptr<CascadePrefixSpec> prefix;
  std::shared_ptr<CascadeSuffixSpec> suffix;
  GpuKernel k_decode, k_prefix, k_suffix;
};

Kernels& kernels(DType dt, int64_t d, int64_t g) {
  static std::map<std::tuple<DType, int64_t, int64_t>, Kernels> built;
  auto it = built.find({dt, d, g});
  if (it != built.end()) return it->second;
  Kernels k;
  k.decode = make_decode_spec(dt, KvCacheKind::kSameAsRows, d, g, DecodeConfig{});
  k.prefix = *make_cascade_prefix_spec(dt, KvCacheKind::kSameAsRows, d, g);
  k.suffix = *make_cascade_suffix_spec(dt, KvCacheKind::kSameAsRows, d, g, DecodeConfig{});
  std::vector<const KernelSpec*> specs = {k.decode.get(), k.prefix.get(), k.suffix.get()};
  std::vector<KernelJob> jobs;
  for (const KernelSpec* s : specs) jobs.push_back({s->key(), *emit_kernel_source(*s)});
  GpuContext& ctx = gpu();
  absl::StatusOr<std::vector<CompiledKernel>> cubins =
      build_kernels(jobs, ctx.device->arch(), ctx.cache.get(), 0);
  EXPECT_TRUE(cubins.ok()) << cubins.status();
  GpuKernel* dst[] = {&k.k_decode, &k.k_prefix, &k.k_suffix};
  for (size_t i = 0; i < 3 && cubins.ok(); ++i) {
    absl::StatusOr<GpuKernel> l = ctx.device->load_kernel((*cubins)[i].cubin, jobs[i].name);
    if (!l.ok()) {
      ADD_FAILURE() << l.status();
      continue;
    }
    *dst[i] = *l;
  }
  return built.emplace(std::tuple{dt, d, g}, std::move(k)).first->second;
}

DeviceBuffer upload(const void* data, size_t bytes) {
  GpuDevice& dev = *gpu().device;
  DeviceBuffer b = *dev.alloc(std::max<size_t>(bytes, 16));
  if (bytes > 0) {
    EXPECT_TRUE(dev.upload(b.ptr(), data, bytes).ok());
  }
  return b;
}
template <class T>
DeviceBuffer upload(const std::vector<T>& v) {
  return upload(v.data(), v.size() * sizeof(T));
}

// One step on the device: its metadata, cache, queries and layout, and launchers for both paths.
struct DeviceStep {
  DType dt = DType::kBF16;
  int64_t hq = 0, hkv = 0, d = 0, ps = 0;
  const StepMetadata* m = nullptr;
  const CascadeLayout* layout = nullptr;
  DeviceBuffer q, k_cache, v_cache, positions, qo, page_indptr, page_indices, last_page_len;
  DeviceBuffer prefix_seqs, prefix_pages, kv_start;
  DeviceBuffer out, o_partial, lse_partial, counters, prefix_o, prefix_lse;

  int64_t S() const { return m->num_sequences(); }

  absl::Status plain(Kernels& k, int64_t splits) {
    LaunchDims dims;
    dims.grid[0] = static_cast<unsigned>(S()), dims.grid[1] = static_cast<unsigned>(hkv);
    dims.grid[2] = static_cast<unsigned>(splits);
    dims.block[0] = static_cast<unsigned>(32 * k.decode->warps);
    dims.dynamic_smem = static_cast<size_t>(k.decode->shared_bytes());
    KernelArgs a = decode_args(splits);
    return gpu().device->launch(k.k_decode, dims, a);
  }

  absl::Status cascade(Kernels& k, int64_t suffix_splits, int64_t prefix_splits) {
    LaunchDims p;
    const int64_t rows = int64_t{layout->num_members()} * (hq / hkv);
    p.grid[0] =
        static_cast<unsigned>((rows + k.prefix->rows_per_block() - 1) / k.prefix->rows_per_block());
    p.grid[1] = static_cast<unsigned>(hkv), p.grid[2] = static_cast<unsigned>(prefix_splits);
    p.block[0] = static_cast<unsigned>(32 * k.prefix->warps);
    p.dynamic_smem = static_cast<size_t>(k.prefix->shared_bytes());
    KernelArgs pa;
    pa.ptr(prefix_o.ptr()).ptr(prefix_lse.ptr()).ptr(q.ptr()).ptr(k_cache.ptr()).ptr(v_cache.ptr());
    pa.ptr(qo.ptr()).ptr(prefix_seqs.ptr()).ptr(prefix_pages.ptr()).i32(layout->num_members());
    pa.i32(layout->prefix_len).i32(static_cast<int32_t>(S())).i32(static_cast<int32_t>(hkv));
    pa.i32(static_cast<int32_t>(ps)).f32(scale());
    if (absl::Status s = gpu().device->launch(k.k_prefix, p, pa); !s.ok()) return s;
    LaunchDims dims;
    dims.grid[0] = static_cast<unsigned>(S()), dims.grid[1] = static_cast<unsigned>(hkv);
    dims.grid[2] = static_cast<unsigned>(suffix_splits);
    dims.block[0] = static_cast<unsigned>(32 * k.suffix->decode.warps);
    dims.dynamic_smem = static_cast<size_t>(k.suffix->shared_bytes());
    KernelArgs a = decode_args(suffix_splits);
    a.ptr(kv_start.ptr()).ptr(prefix_o.ptr()).ptr(prefix_lse.ptr());
    a.i32(static_cast<int32_t>(prefix_splits));
    return gpu().device->launch(k.k_suffix, dims, a);
  }

  float scale() const { return 1.0f / std::sqrt(static_cast<float>(d)); }

  KernelArgs decode_args(int64_t splits) {
    (void)splits;  // the kernel reads its split count from the grid
    KernelArgs a;
    a.ptr(out.ptr()).ptr(o_partial.ptr()).ptr(lse_partial.ptr()).ptr(counters.ptr());
    a.ptr(q.ptr()).ptr(k_cache.ptr()).ptr(v_cache.ptr()).ptr(positions.ptr()).ptr(qo.ptr());
    a.ptr(page_indptr.ptr()).ptr(page_indices.ptr()).ptr(last_page_len.ptr());
    a.i32(static_cast<int32_t>(S())).i32(static_cast<int32_t>(hkv)).i32(static_cast<int32_t>(ps));
    a.f32(scale()).f32(8.0f);  // phi: unused by the lse softmax
    return a;
  }
};

struct HostStep {
  std::vector<float> q, k, v;  // values as rounded to the dtype
  std::vector<uint16_t> q16, k16, v16;
};

HostStep random_values(std::mt19937& rng, DType dt, size_t nq, size_t nkv) {
  HostStep h;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto fill = [&](std::vector<float>& f, std::vector<uint16_t>& b, size_t n, float sd) {
    f.resize(n), b.resize(n);
    for (size_t i = 0; i < n; ++i) {
      b[i] = encode16(dt, sd * normal(rng));
      f[i] = decode16(dt, b[i]);
    }
  };
  fill(h.q, h.q16, nq, 1.0f);
  fill(h.k, h.k16, nkv, 1.5f);
  fill(h.v, h.v16, nkv, 1.0f);
  return h;
}

DeviceStep make_device_step(DType dt, int64_t hq, int64_t hkv, int64_t d, int64_t ps,
                            const testing::SharedStep& step, const CascadeLayout& layout,
                            const HostStep& h, int64_t max_splits) {
  const StepMetadata& m = step.metadata;
  DeviceStep s;
  s.dt = dt, s.hq = hq, s.hkv = hkv, s.d = d, s.ps = ps, s.m = &m, s.layout = &layout;
  const int64_t S = m.num_sequences();
  s.q = upload(h.q16), s.k_cache = upload(h.k16), s.v_cache = upload(h.v16);
  s.positions = upload(m.positions), s.qo = upload(m.qo_indptr);
  s.page_indptr = upload(m.kv_page_indptr), s.page_indices = upload(m.kv_page_indices);
  s.last_page_len = upload(m.kv_last_page_len);
  s.prefix_seqs = upload(layout.prefix_seqs), s.prefix_pages = upload(layout.prefix_pages);
  s.kv_start = upload(layout.kv_start);
  GpuDevice& dev = *gpu().device;
  const size_t rows = static_cast<size_t>(S * hq);
  s.out = *dev.alloc(rows * d * 2);
  s.o_partial = *dev.alloc(max_splits * rows * d * 4);
  s.lse_partial = *dev.alloc(2 * max_splits * rows * 4);
  s.counters = *dev.alloc(S * hkv * 4);
  EXPECT_TRUE(dev.fill_bytes(s.counters.ptr(), 0, S * hkv * 4).ok());
  s.prefix_o = *dev.alloc(kMaxCascadePrefixSplits * rows * d * 4);
  s.prefix_lse = *dev.alloc(kMaxCascadePrefixSplits * rows * 4);
  return s;
}

std::vector<float> download_out(DeviceStep& s) {
  const size_t n = static_cast<size_t>(s.S() * s.hq * s.d);
  std::vector<uint16_t> b(n);
  EXPECT_TRUE(gpu().device->download(b.data(), s.out.ptr(), n * 2).ok());
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) f[i] = decode16(s.dt, b[i]);
  return f;
}

void poison(DeviceStep& s) {
  EXPECT_TRUE(gpu().device->fill_bytes(s.out.ptr(), 0xff, s.S() * s.hq * s.d * 2).ok());  // NaN
}

void expect_counters_zero(DeviceStep& s, const std::string& what) {
  std::vector<int32_t> c(s.S() * s.hkv);
  ASSERT_TRUE(gpu().device->download(c.data(), s.counters.ptr(), c.size() * 4).ok());
  for (size_t i = 0; i < c.size(); ++i) ASSERT_EQ(c[i], 0) << what << ": split counter " << i;
}

// |got - want| <= tol * (max|want| + |want|) elementwise; the first violation is reported.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol,
                  const std::string& what) {
  double mag = 0;
  for (float w : want) mag = std::max(mag, static_cast<double>(std::fabs(w)));
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(err <= tol * (mag + std::fabs(want[i])))) {
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << ", want " << want[i]
                    << " (max |want| " << mag << ", NaN = never written)";
      return;
    }
  }
}

struct Sweep {
  DType dt;
  int64_t d, g, ps;
};

void run_case(const Sweep& c, std::mt19937& rng, int trial, bool empty_suffixes) {
  constexpr int64_t kHkv = 2;
  const int64_t hq = kHkv * c.g;
  const int32_t seqs = 2 + static_cast<int32_t>(rng() % 11);
  const int32_t members = 2 + static_cast<int32_t>(rng() % (seqs - 1));
  // Prefixes from under one page to a few hundred tokens; suffixes up to ~3 pages of 16.
  const int32_t shared_pages = 1 + static_cast<int32_t>(rng() % std::max<int64_t>(1, 256 / c.ps));
  const int32_t suffix_pages = static_cast<int32_t>(std::max<int64_t>(1, 48 / c.ps));
  testing::SharedStep step = testing::random_shared_step(
      rng, static_cast<int32_t>(c.ps), seqs, members, shared_pages, suffix_pages, empty_suffixes);
  std::optional<CascadeLayout> layout =
      find_shared_prefix(step.metadata, static_cast<int32_t>(c.ps), {2, 1});
  ASSERT_TRUE(layout.has_value());
  const std::string what = absl::StrCat(c.dt == DType::kBF16 ? "bf16" : "f16", " d", c.d, " g", c.g,
                                        " ps", c.ps, " trial ", trial, ": S ", seqs, ", members ",
                                        layout->num_members(), ", prefix ", layout->prefix_len);
  const size_t nkv = static_cast<size_t>(step.num_pages * c.ps * kHkv * c.d);
  HostStep h = random_values(rng, c.dt, static_cast<size_t>(seqs * hq * c.d), nkv);
  // The CPU reference on the same (rounded) values.
  std::vector<float> want(h.q.size());
  auto iv = [](const std::vector<int32_t>& v) {
    return IView{v.data(), {static_cast<int64_t>(v.size())}};
  };
  const StepMetadata& m = step.metadata;
  PagedBatch batch = *make_paged_batch(iv(m.qo_indptr), iv(m.kv_page_indptr), iv(m.kv_page_indices),
                                       iv(m.kv_last_page_len), seqs, step.num_pages, c.ps);
  const std::vector<int64_t> cache_shape = {step.num_pages, c.ps, kHkv, c.d};
  ASSERT_TRUE(cascade_attention(FView{h.q.data(), {seqs, hq, c.d}},
                                KvCacheView{h.k.data(), cache_shape, nullptr},
                                KvCacheView{h.v.data(), cache_shape, nullptr}, batch, *layout,
                                1.0 / std::sqrt(static_cast<double>(c.d)), want.data())
                  .ok());
  Kernels& k = kernels(c.dt, c.d, c.g);
  const int64_t suffix_splits = 1 + rng() % 4, prefix_splits = 1 + rng() % 8;
  DeviceStep s = make_device_step(c.dt, hq, kHkv, c.d, c.ps, step, *layout, h, 8);
  // bf16 rounds P and the output to 8 bits of mantissa, f16 to 11.
  const double tol = c.dt == DType::kBF16 ? 2e-2 : 4e-3;
  poison(s);
  ASSERT_TRUE(s.plain(k, suffix_splits).ok());
  ASSERT_TRUE(gpu().device->synchronize().ok()) << what;
  std::vector<float> plain = download_out(s);
  expect_counters_zero(s, what + " plain");
  poison(s);
  ASSERT_TRUE(s.cascade(k, suffix_splits, prefix_splits).ok());
  ASSERT_TRUE(gpu().device->synchronize().ok()) << what;
  std::vector<float> cascade = download_out(s);
  expect_counters_zero(s, what + " cascade");
  expect_close(plain, want, tol, what + " plain decode vs reference");
  expect_close(cascade, want, tol, what + " cascade vs reference");
  expect_close(cascade, plain, tol, what + " cascade vs plain decode");
}

TEST(CascadeGpu, EqualsPlainPagedDecodeOverRandomSplits) {
  REQUIRE_GPU();
  std::mt19937 rng(14);
  int trial = 0;
  for (int64_t d : {64, 128}) {
    for (int64_t g : {1, 4, 8}) {
      for (int64_t ps : {1, 16, 64}) {
        for (int t = 0; t < 3; ++t)
          run_case({DType::kBF16, d, g, ps}, rng, trial++, t == 0);  // NOLINT
      }
    }
  }
}

TEST(CascadeGpu, F16) {
  REQUIRE_GPU();
  std::mt19937 rng(15);
  int trial = 0;
  for (int64_t d : {64, 128}) {
    for (int64_t g : {1, 8}) {
      run_case({DType::kF16, d, g, 16}, rng, trial, trial % 2 == 0);
      ++trial;
    }
  }
}

// Decode attention with a shared prefix on the Llama-3-8B attention shape (32 query / 8 KV heads
// of 128, bf16, pages of 16): every sequence has the prefix plus 64 tokens of its own. Times plain
// decode (its split policy: decode_split_expr) against cascade (cascade_prefix_splits), each the
// median of 20 after warm-up.
TEST(CascadeGpu, DecodeSpeed) {
  REQUIRE_GPU();
  if (std::getenv("KILN_CASCADE_BENCH") == nullptr) {
    GTEST_SKIP() << "timing only with KILN_CASCADE_BENCH=1 (bench/gpu/cascade.sh)";
  }
  constexpr int64_t kHq = 32, kHkv = 8, kD = 128, kPs = 16, kSuffix = 64;
  Kernels& k = kernels(DType::kBF16, kD, kHq / kHkv);
  std::printf("[ cascade ] %-8s %-6s %12s %12s %9s\n", "prefix", "batch", "plain us", "cascade us",
              "speedup");
  for (int64_t prefix : {1024, 8192, 32768}) {
    for (int64_t batch : {16, 64, 256}) {
      std::vector<std::vector<int32_t>> pages(batch);
      std::vector<int32_t> kv_len(batch, static_cast<int32_t>(prefix + kSuffix));
      int32_t next = static_cast<int32_t>(prefix / kPs);
      for (auto& p : pages) {
        for (int32_t i = 0; i < prefix / kPs; ++i) p.push_back(i);
        for (int32_t i = 0; i < kSuffix / kPs; ++i) p.push_back(next++);
      }
      testing::SharedStep step;
      step.metadata = testing::decode_step(pages, kv_len, kPs);
      step.num_pages = next;
      CascadeLayout layout = *find_shared_prefix(step.metadata, kPs);
      std::mt19937 rng(static_cast<uint32_t>(prefix + batch));
      HostStep h = random_values(rng, DType::kBF16, batch * kHq * kD, next * kPs * kHkv * kD);
      DeviceStep s =
          make_device_step(DType::kBF16, kHq, kHkv, kD, kPs, step, layout, h, kMaxSplitKv);
      const int64_t K = prefix + kSuffix;
      const int64_t plain_splits = std::min<int64_t>(
          kMaxSplitKv,
          std::max<int64_t>(1, std::min((K + 255) / 256, (kDecodeTargetBlocks + batch * kHkv - 1) /
                                                             (batch * kHkv))));
      const int64_t suffix_splits = 1;
      const int64_t prefix_splits =
          cascade_prefix_splits(*k.prefix, batch * (kHq / kHkv), kHkv, prefix);
      auto median_us = [&](const std::function<absl::Status()>& fn) {
        for (int i = 0; i < 3; ++i) EXPECT_TRUE(fn().ok());
        std::vector<float> t;
        for (int i = 0; i < 20; ++i) t.push_back(*gpu().device->time_ms(fn));
        std::sort(t.begin(), t.end());
        return 1000.0 * t[t.size() / 2];
      };
      const double plain = median_us([&] { return s.plain(k, plain_splits); });
      const double cascade = median_us([&] { return s.cascade(k, suffix_splits, prefix_splits); });
      // The two paths agree on this step too.
      std::vector<float> c_out = download_out(s);
      ASSERT_TRUE(s.plain(k, plain_splits).ok());
      ASSERT_TRUE(gpu().device->synchronize().ok());
      expect_close(c_out, download_out(s), 2e-2, absl::StrCat("prefix ", prefix, " batch ", batch));
      std::printf("[ cascade ] %-8lld %-6lld %12.1f %12.1f %8.2fx\n",
                  static_cast<long long>(prefix), static_cast<long long>(batch), plain, cascade,
                  plain / cascade);
    }
  }
}

}  // namespace
}  // namespace kiln
