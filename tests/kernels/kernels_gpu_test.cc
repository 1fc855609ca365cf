// Numerical GPU tests of every kernel family against the CPU reference backend, in the spirit of
// llama.cpp's test-backend-ops: each case is a one-node fused IR graph; codegen lowers it (the
// families' specs, launch rules and bound arguments, in the plan's types), NVRTC compiles the specs
// for the device's arch (through a kernel cache in the build folder), the driver API runs them with
// the arguments plan/launch_binding.h binds (as the CUDA backend does) on fresh random inputs
// (rounded to bf16/f16 first so both sides see identical values) with every output poisoned with
// NaN first, and the ReferenceExecutor runs the same node. Every element is compared with a
// per-family bound. Without a GPU driver every test skips, saying why.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "codegen/kernel_cache.h"
#include "codegen/kernel_source.h"
#include "codegen/lowering.h"
#include "codegen/nvrtc_compiler.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/view.h"
#include "models/dequantize.h"
#include "plan/launch_binding.h"
#include "plan/launch_expr.h"
#include "runtime/cuda/driver.h"
#include "tests/kernels/gpu_context.h"
#include "runtime/reference/executor.h"
#include "runtime/reference/ops.h"

namespace kiln {
namespace {

// ---------------------------------------------------------------------------------------------
// Host-side values: every float a test feeds is representable in the kernel's dtype.

uint16_t f32_to_f16(float f) {  // round to nearest even; test data stays far from overflow
  uint32_t b;
  std::memcpy(&b, &f, 4);
  const uint32_t sign = (b >> 16) & 0x8000;
  const float a = std::fabs(f);
  if (a < 6.103515625e-05f) {  // subnormal half: a multiple of 2^-24
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.0f)));
  }
  const int32_t exp = static_cast<int32_t>((b >> 23) & 0xff) - 127 + 15;
  const uint32_t mant = b & 0x7fffff;
  uint32_t h = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  if ((mant & 0x1fff) > 0x1000 || ((mant & 0x1fff) == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(h);
}

size_t elem_bytes(DType dt) {
  return dt == DType::kFP8E4M3 ? 1 : dt == DType::kBF16 || dt == DType::kF16 ? 2 : 4;
}

float round_to(DType dt, float x) {
  if (dt == DType::kBF16) return bf16_to_f32(f32_to_bf16(x));
  if (dt == DType::kF16) return f16_to_f32(f32_to_f16(x));
  return x;
}

/// The bytes the GPU sees for a host tensor (float values encoded in `dt`, ints as int32).
std::string encode(const HostTensor& t, DType dt) {
  std::string bytes;
  if (t.is_index()) {
    bytes.resize(t.i.size() * 4);
    std::memcpy(bytes.data(), t.i.data(), bytes.size());
    return bytes;
  }
  bytes.resize(t.f.size() * elem_bytes(dt));
  for (size_t k = 0; k < t.f.size(); ++k) {
    if (dt == DType::kFP8E4M3) {  // an fp8e4m3 cache's codes (their values are e4m3 numbers)
      bytes[k] = static_cast<char>(f32_to_fp8e4m3(t.f[k]));
    } else if (dt == DType::kF32) {
      std::memcpy(bytes.data() + 4 * k, &t.f[k], 4);
    } else {
      const uint16_t h = dt == DType::kBF16 ? f32_to_bf16(t.f[k]) : f32_to_f16(t.f[k]);
      std::memcpy(bytes.data() + 2 * k, &h, 2);
    }
  }
  return bytes;
}

std::vector<float> decode(const std::string& bytes, DType dt) {
  const size_t n = bytes.size() / elem_bytes(dt);
  std::vector<float> out(n);
  for (size_t k = 0; k < n; ++k) {
    if (dt == DType::kFP8E4M3) {
      out[k] = fp8e4m3_to_f32(static_cast<uint8_t>(bytes[k]));
    } else if (dt == DType::kF32) {
      std::memcpy(&out[k], bytes.data() + 4 * k, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, bytes.data() + 2 * k, 2);
      out[k] = dt == DType::kBF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
  }
  return out;
}

/// Uniform random floats in [lo, hi), rounded to `dt`, never all zero.
HostTensor random_floats(std::vector<int64_t> shape, DType dt, std::mt19937& rng, float lo = -1,
                         float hi = 1) {
  std::uniform_real_distribution<float> dist(lo, hi);
  HostTensor t = HostTensor::floats(shape, std::vector<float>(num_elements(shape)), dt);
  for (float& x : t.f) x = round_to(dt, dist(rng));
  return t;
}

HostTensor ints(std::vector<int32_t> v) {
  const int64_t n = static_cast<int64_t>(v.size());
  return HostTensor::ints({n}, std::move(v));
}

const char* dt_name(DType dt) {
  return dt == DType::kBF16 ? "bf16" : dt == DType::kF16 ? "f16" : "f32";
}

// ---------------------------------------------------------------------------------------------
// Per-family error bounds: |gpu - ref| <= atol + rtol * |ref| for every element.

struct Tolerance {
  double atol = 0, rtol = 0;
  static Tolerance exact() { return {0, 0}; }
};

/// Unit roundoff of the output dtype (half an ulp, relative).
double unit_roundoff(DType dt) {
  return dt == DType::kBF16  ? std::ldexp(1.0, -8)
         : dt == DType::kF16 ? std::ldexp(1.0, -11)
                             : std::ldexp(1.0, -24);
}

std::string multi_index(int64_t flat, const std::vector<int64_t>& shape) {
  std::vector<int64_t> idx(shape.size());
  for (size_t a = shape.size(); a-- > 0;) {
    idx[a] = shape[a] == 0 ? 0 : flat % shape[a];
    flat = shape[a] == 0 ? 0 : flat / shape[a];
  }
  return absl::StrCat("[", absl::StrJoin(idx, ","), "]");
}

/// Checks every element; one failure per tensor naming the first bad index, its values, and how
/// many elements are out of bounds.
void expect_close(const std::string& what, const std::vector<float>& gpu,
                  const std::vector<float>& ref, const std::vector<int64_t>& shape, Tolerance tol) {
  ASSERT_EQ(gpu.size(), ref.size()) << what;
  int64_t bad = 0, first = -1, nan = 0;
  double max_err = 0;
  for (size_t k = 0; k < gpu.size(); ++k) {
    const double g = gpu[k], r = ref[k];
    const double err = std::fabs(g - r);
    const bool ok = std::isfinite(g) && err <= tol.atol + tol.rtol * std::fabs(r);
    if (!std::isfinite(g)) ++nan;
    if (std::isfinite(err)) max_err = std::max(max_err, err);
    if (!ok && bad++ == 0) first = static_cast<int64_t>(k);
  }
  if (bad == 0) return;
  ADD_FAILURE() << what << ": " << bad << " of " << gpu.size() << " elements out of bounds (atol "
                << tol.atol << ", rtol " << tol.rtol << "); " << nan
                << " non-finite (NaN = never written: outputs are NaN-poisoned); max |err| "
                << max_err << "; first bad " << multi_index(first, shape) << " (flat " << first
                << "): gpu " << gpu[first] << " vs reference " << ref[first];
}

// ---------------------------------------------------------------------------------------------
// The device, the kernel cache and compiled kernels, shared by the tests of this process.

using testing::gpu;
using testing::GpuContext;

// ---------------------------------------------------------------------------------------------
// A case: one fused node as an IR graph plus its inputs.

struct Case {
  std::string name;  // "rmsnorm bf16 h=576"
  std::string ir;
  std::map<std::string, HostTensor, std::less<>> inputs;  // by input name (no '%')
  std::map<std::string, HostTensor, std::less<>> caches;  // KV caches (fp32 of rounded values)
  std::vector<std::pair<std::string, int64_t>> symbols;   // T, S, P, NP, ...
  bool prefill = false;        // the step kind: prefill (some sequence has > 1 query) or decode
  std::vector<Tolerance> tol;  // per graph output
  Tolerance cache_tol = Tolerance::exact();  // the KV caches (a rope before the append: not exact)
  Tolerance scale_tol = Tolerance::exact();  // an fp8e4m3 cache's scale arrays (`*_scales`)
};

struct Lowered {
  std::unique_ptr<Graph> graph;
  LoweredGraph plan;
};

Lowered lower_case(const Case& c, const LoweringOptions& options = {.add_sampling = false}) {
  Lowered l;
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(c.ir);
  EXPECT_TRUE(g.ok()) << c.name << ": " << g.status() << "\n" << c.ir;
  if (!g.ok()) return l;
  l.graph = std::move(*g);
  absl::StatusOr<LoweredGraph> p = lower_graph(*l.graph, options);
  EXPECT_TRUE(p.ok()) << c.name << ": " << p.status();
  if (p.ok()) l.plan = std::move(*p);
  return l;
}

/// Compiles (through the cache, in parallel) and loads every kernel the lowered cases use.
void build_all(const std::vector<const LoweredGraph*>& plans) {
  GpuContext& ctx = gpu();
  std::vector<KernelJob> jobs;
  std::map<std::string, bool> seen;
  for (const LoweredGraph* p : plans) {
    for (const auto& s : p->specs) {
      if (ctx.kernels.count(s->key()) || !seen.emplace(s->key(), true).second) continue;
      absl::StatusOr<std::string> src = emit_kernel_source(*s);
      ASSERT_TRUE(src.ok()) << s->key() << ": " << src.status();
      jobs.push_back({s->key(), *src});
    }
  }
  if (jobs.empty()) return;
  BuildStats stats;
  absl::StatusOr<std::vector<CompiledKernel>> built =
      build_kernels(jobs, ctx.device->arch(), ctx.cache.get(), 0, &stats);
  ASSERT_TRUE(built.ok()) << built.status();
  std::printf("[ kiln gpu ] %zu kernels for %s: %d compiled, %d cache hits, %.1f s\n", jobs.size(),
              ctx.device->arch().c_str(), stats.compiled, stats.hits, stats.seconds);
  for (const CompiledKernel& k : *built) {
    absl::StatusOr<GpuKernel> loaded = ctx.device->load_kernel(k.cubin, k.name);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ctx.kernels.emplace(k.name, *loaded);
  }
}

/// Device buffers of one GPU run, by value name ("%q"); aliases resolve to what they view. It
/// resolves the plan's launch arguments (plan/launch_binding.h) as the CUDA backend does.
class GpuRun : public LaunchResolver {
 public:
  GpuRun(const Graph& g, const LoweredGraph& plan, const Case& c)
      : g_(g), plan_(plan), c_(c), names_(g) {
    for (const auto& [k, v] : c.symbols) symbols_.set(k, v);
  }

  std::string resolve(std::string name) const {
    for (bool changed = true; changed;) {
      changed = false;
      for (const PlanAlias& a : plan_.aliases) {
        if (a.value == name) name = a.of, changed = true;
      }
    }
    return name;
  }

  absl::Status upload_inputs() {
    GpuDevice& dev = *gpu().device;
    for (const Value* v : g_.inputs()) {
      auto t = c_.inputs.find(v->name);
      auto ch = c_.caches.find(v->name);
      const HostTensor* h = t != c_.inputs.end()    ? &t->second
                            : ch != c_.caches.end() ? &ch->second
                                                    : nullptr;
      if (h == nullptr) return absl::NotFoundError(absl::StrCat("input %", v->name, " unbound"));
      const std::string bytes = encode(*h, v->type.dtype);
      absl::StatusOr<DeviceBuffer> b = dev.alloc(bytes.size());
      if (!b.ok()) return b.status();
      if (absl::Status s = dev.upload(b->ptr(), bytes.data(), bytes.size()); !s.ok()) return s;
      buffers_[names_(v)] = std::move(*b);
    }
    return absl::OkStatus();
  }

  /// The buffer of a value, allocating (NaN-poisoned) node results on first use.
  absl::StatusOr<DevicePtr> buffer(const std::string& value) {
    const std::string name = resolve(value);
    if (auto it = buffers_.find(name); it != buffers_.end()) return it->second.ptr();
    for (const auto& n : g_.nodes()) {
      for (const Value* o : n->outputs) {
        if (names_(o) != name) continue;
        // A view (a slice; ir/view.h) is its base's bytes, `offset` elements in.
        if (std::optional<StridedRows> view = strided_rows(*o); view && view->base != o) {
          absl::StatusOr<DevicePtr> base = buffer(names_(view->base));
          if (!base.ok()) return base.status();
          return *base + view->offset * elem_bytes(o->type.dtype);
        }
        absl::StatusOr<std::vector<int64_t>> shape = symbols_.resolve(o->type.shape);
        if (!shape.ok()) return shape.status();
        return alloc_poisoned(name, num_elements(*shape) * elem_bytes(o->type.dtype));
      }
    }
    return absl::NotFoundError(absl::StrCat("no value ", name));
  }

  absl::StatusOr<uint64_t> tensor(const std::string& value) override { return buffer(value); }

  absl::StatusOr<uint64_t> runtime(RuntimeInput input) override {
    auto it = runtime_.find(input);
    if (it == runtime_.end()) {
      return absl::NotFoundError(absl::StrCat("runtime input ", static_cast<int>(input), " unset"));
    }
    return it->second;
  }

  absl::StatusOr<uint64_t> workspace(const std::string& name) override {
    if (auto it = buffers_.find(name); it != buffers_.end()) return it->second.ptr();
    for (const PlanWorkspace& w : plan_.workspaces) {
      if (w.name != name) continue;
      absl::StatusOr<int64_t> bytes = eval_launch_expr(w.bytes, c_.symbols);
      if (!bytes.ok()) return bytes.status();
      absl::StatusOr<DevicePtr> p = alloc_poisoned(name, *bytes);
      // A zeroed workspace (the decode's split counters) starts at zero, as the runtime fills
      // it; the rest stay poisoned.
      if (p.ok() && w.zeroed) {
        if (absl::Status s = gpu().device->fill_bytes(*p, 0, *bytes); !s.ok()) return s;
      }
      return p;
    }
    return absl::NotFoundError(absl::StrCat("no workspace ", name));
  }

  absl::StatusOr<DevicePtr> alloc_poisoned(const std::string& name, int64_t bytes) {
    GpuDevice& dev = *gpu().device;
    absl::StatusOr<DeviceBuffer> b = dev.alloc(bytes);
    if (!b.ok()) return b.status();
    // 0xFF bytes: NaN in f32, bf16 and f16, -1 in int32.
    if (absl::Status s = dev.fill_bytes(b->ptr(), 0xFF, bytes); !s.ok()) return s;
    const DevicePtr p = b->ptr();
    buffers_[name] = std::move(*b);
    return p;
  }

  /// The plan's binding of one launch, packed for the driver.
  absl::StatusOr<KernelArgs> args_for(const PlanLaunch& l) {
    absl::StatusOr<std::vector<BoundArg>> bound =
        bind_launch(plan_.kernels[l.kernel], l, c_.symbols, *this);
    if (!bound.ok()) return bound.status();
    KernelArgs a;
    for (const BoundArg& b : *bound) {
      switch (b.type) {
        case ParamType::kPointer: a.ptr(b.pointer); break;
        case ParamType::kI32: a.i32(static_cast<int32_t>(b.integer)); break;
        case ParamType::kI64: a.i64(b.integer); break;
        case ParamType::kF32: a.f32(b.real); break;
      }
    }
    return a;
  }

  absl::StatusOr<LaunchDims> dims(const LaunchRule& r) const {
    absl::StatusOr<LaunchGeometry> g = eval_launch_rule(r, c_.symbols);
    if (!g.ok()) return g.status();
    LaunchDims d;
    for (int k = 0; k < 3; ++k) {
      d.grid[k] = static_cast<unsigned>(g->grid[k]);
      d.block[k] = static_cast<unsigned>(g->block[k]);
    }
    d.dynamic_smem = static_cast<size_t>(g->dynamic_shared_bytes);
    return d;
  }

  /// Launches one kernel and waits for it (so a fault names the kernel that caused it).
  absl::Status launch(const PlanLaunch& l) {
    GpuContext& ctx = gpu();
    const std::string& key = plan_.kernels[l.kernel].key;
    auto k = ctx.kernels.find(key);
    if (k == ctx.kernels.end()) return absl::NotFoundError(absl::StrCat(key, " was not built"));
    absl::StatusOr<KernelArgs> a = args_for(l);
    if (!a.ok()) return a.status();
    absl::StatusOr<LaunchDims> d = dims(l.rule);
    if (!d.ok()) return d.status();
    if (absl::Status s = ctx.device->launch(k->second, *d, *a); !s.ok()) return s;
    absl::Status s = ctx.device->synchronize();
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(key, ": ", s.message()));
    launched_.push_back(key);
    return absl::OkStatus();
  }

  /// Sets the device buffer of a runtime input (the sampling kernel's).
  void set_runtime(RuntimeInput input, DevicePtr p) { runtime_[input] = p; }

  /// Runs every launch of the case's step kind, in program order.
  absl::Status run_all() {
    for (const PlanLaunch& l : plan_.launches) {
      if (!launch_runs_in(l.rule.when, c_.prefill)) continue;
      if (absl::Status s = launch(l); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<float>> download(const std::string& value, DType dt, int64_t n) {
    absl::StatusOr<DevicePtr> p = buffer(value);
    if (!p.ok()) return p.status();
    std::string bytes(n * elem_bytes(dt), '\0');
    if (absl::Status s = gpu().device->download(bytes.data(), *p, bytes.size()); !s.ok()) return s;
    return decode(bytes, dt);
  }

  const ValueNames& names() const { return names_; }
  const SymbolBindings& symbols() const { return symbols_; }
  std::string kernels_run() const { return absl::StrJoin(launched_, " + "); }

 private:
  const Graph& g_;
  const LoweredGraph& plan_;
  const Case& c_;
  ValueNames names_;
  SymbolBindings symbols_;
  std::map<std::string, DeviceBuffer> buffers_;
  std::map<RuntimeInput, DevicePtr> runtime_;
  std::vector<std::string> launched_;
};

/// Runs a case on the GPU and on the reference backend and compares every graph output (and
/// every KV cache, exactly: kv_append is pure data movement).
void check_case(const Case& c, const Lowered& l) {
  SCOPED_TRACE(c.name);
  ASSERT_NE(l.graph, nullptr);
  // Reference: caches are updated in place, so it gets its own copies.
  std::map<std::string, std::vector<float>> ref_caches;
  InputBindings in;
  for (const auto& [name, t] : c.inputs) in.tensors.emplace(name, t);
  for (const auto& [name, t] : c.caches) {
    ref_caches[name] = t.f;
    in.caches[name] = KvCacheView{ref_caches[name].data(), t.shape};
  }
  in.symbols.values = c.symbols;
  absl::StatusOr<std::unique_ptr<ReferenceExecutor>> ex =
      ReferenceExecutor::create(*l.graph, {}, 4);
  ASSERT_TRUE(ex.ok()) << ex.status();
  absl::StatusOr<std::vector<HostTensor>> ref = (*ex)->run(in);
  ASSERT_TRUE(ref.ok()) << ref.status();

  GpuRun run(*l.graph, l.plan, c);
  ASSERT_TRUE(run.upload_inputs().ok());
  absl::Status s = run.run_all();
  ASSERT_TRUE(s.ok()) << s;

  const auto& outs = l.graph->outputs();
  ASSERT_EQ(outs.size(), ref->size());
  ASSERT_EQ(c.tol.size(), outs.size()) << "one tolerance per output";
  for (size_t k = 0; k < outs.size(); ++k) {
    const Value* v = outs[k].value;
    const HostTensor& r = (*ref)[k];
    absl::StatusOr<std::vector<float>> got = run.download(run.names()(v), v->type.dtype, r.numel());
    ASSERT_TRUE(got.ok()) << got.status();
    const std::vector<float> want = r.is_index() ? std::vector<float>(r.i.begin(), r.i.end()) : r.f;
    expect_close(absl::StrCat(c.name, " [", run.kernels_run(), "] output ", outs[k].name), *got,
                 want, r.shape, c.tol[k]);
  }
  for (const auto& [name, t] : c.caches) {
    const Value* v = l.graph->find_input(name);
    ASSERT_NE(v, nullptr);
    absl::StatusOr<std::vector<float>> got = run.download("%" + name, v->type.dtype, t.numel());
    ASSERT_TRUE(got.ok()) << got.status();
    const bool scales = name.find("scales") != std::string::npos;
    expect_close(absl::StrCat(c.name, " [", run.kernels_run(), "] kv_append cache %", name), *got,
                 ref_caches[name], t.shape, scales ? c.scale_tol : c.cache_tol);
  }
  // A zeroed workspace (the decode's split counters) must be zero again after the step, or the
  // next step's splits would miscount.
  for (const PlanWorkspace& w : l.plan.workspaces) {
    if (!w.zeroed) continue;
    absl::StatusOr<uint64_t> p = run.workspace(w.name);
    ASSERT_TRUE(p.ok()) << p.status();
    absl::StatusOr<int64_t> bytes = eval_launch_expr(w.bytes, c.symbols);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    std::vector<int32_t> words(*bytes / 4, -7);
    ASSERT_TRUE(gpu().device->download(words.data(), *p, words.size() * 4).ok());
    EXPECT_EQ(std::count(words.begin(), words.end(), 0), static_cast<int64_t>(words.size()))
        << c.name << ": workspace " << w.name << " is not zero after the step";
  }
}

/// Lowers, builds (in parallel) and checks a sweep of cases.
void check_sweep(const std::vector<Case>& cases) {
  std::vector<Lowered> lowered;
  std::vector<const LoweredGraph*> plans;
  for (const Case& c : cases) {
    lowered.push_back(lower_case(c));
  }
  for (const Lowered& l : lowered) plans.push_back(&l.plan);
  build_all(plans);
  if (::testing::Test::HasFatalFailure()) return;
  for (size_t i = 0; i < cases.size(); ++i) check_case(cases[i], lowered[i]);
}

std::string graph_header(const std::vector<std::string>& symbols) {
  std::string s = "graph @t {\n";
  for (const std::string& sym : symbols) absl::StrAppend(&s, "  symbol ", sym, "\n");
  return s;
}

// ---------------------------------------------------------------------------------------------
// rmsnorm / rmsnorm_residual: y = x / rms(x) * w (fp32 inside). Bound: the GPU rounds the residual
// sum to the dtype before normalizing and rounds y once, so 2 unit roundoffs relative (bf16: 7.8e-3
// -> 1e-2; f16: 9.8e-4 -> 2e-3), residual_out: 1 unit roundoff.

// `knobs` is appended to the node's attributes (the tuner's norm_threads / norm_rows).
Case rmsnorm_case(DType dt, int64_t h, int64_t rows, bool residual, uint32_t seed,
                  const std::string& knobs = "") {
  std::mt19937 rng(seed);
  Case c;
  const std::string t = dt_name(dt), hs = absl::StrCat(h);
  c.name = absl::StrCat(residual ? "rmsnorm_residual " : "rmsnorm ", t, " h=", h, " rows=", rows,
                        knobs);
  c.ir = graph_header({"T <= 4096"});
  absl::StrAppend(&c.ir, "  input %x : ", t, "[T,", hs, "]\n");
  if (residual) absl::StrAppend(&c.ir, "  input %res : ", t, "[T,", hs, "]\n");
  absl::StrAppend(&c.ir, "  input %w : ", t, "[", hs, "]\n");
  if (residual) {
    absl::StrAppend(&c.ir, "  %y, %sum = rmsnorm_residual(%x, %res, %w) {eps = 1e-06", knobs, "} : ", t, "[T,",
                    hs, "], ", t, "[T,", hs, "]\n  output y = %y\n  output sum = %sum\n}\n");
  } else {
    absl::StrAppend(&c.ir, "  %y = rmsnorm(%x, %w) {eps = 1e-05", knobs, "} : ", t, "[T,", hs,
                    "]\n  output y = %y\n}\n");
  }
  c.inputs["x"] = random_floats({rows, h}, dt, rng, -2, 2);
  if (residual) c.inputs["res"] = random_floats({rows, h}, dt, rng, -2, 2);
  c.inputs["w"] = random_floats({h}, dt, rng, -1.5, 1.5);
  c.symbols = {{"T", rows}};
  const double u = unit_roundoff(dt);
  c.tol = {{1e-5, dt == DType::kBF16 ? 1e-2 : 2e-3}};
  if (residual) c.tol.push_back({1e-6, u});
  return c;
}

std::vector<Case> rmsnorm_sweep() {
  std::vector<Case> cases;
  uint32_t seed = 1;
  for (DType dt : {DType::kBF16, DType::kF16}) {
    for (bool residual : {false, true}) {
      // 576: SmolLM2 (vec 8, 96 threads); 2048: 256 threads x 1; 4100: vec 4, 5 vectors/thread.
      for (int64_t h : {576, 2048, 4100}) cases.push_back(rmsnorm_case(dt, h, 7, residual, seed++));
    }
  }
  // Tuned layouts: a warp per row with several rows per block (a partial last block: 7 rows in
  // blocks of 4), 512 and 128 threads per row at h = 4096.
  cases.push_back(rmsnorm_case(DType::kBF16, 576, 7, true, seed++, ", norm_rows = 4, norm_threads = 32"));
  cases.push_back(rmsnorm_case(DType::kF16, 4096, 5, true, seed++, ", norm_threads = 512"));
  cases.push_back(rmsnorm_case(DType::kBF16, 4096, 9, false, seed++, ", norm_rows = 2, norm_threads = 128"));
  return cases;
}

TEST(KernelsGpu, RmsNorm) {
  REQUIRE_GPU();
  check_sweep(rmsnorm_sweep());
}

// ---------------------------------------------------------------------------------------------
// rope: rotate-half and interleaved, full and partial rotary_dim, with and without llama3
// scaling. The GPU takes sincosf of a float angle (position * float inv_freq), the reference cos
// and sin of a double angle: at positions < 4096 the angles differ by < 5e-4 rad, so |err| <=
// 2e-3 (|x| <= 2) plus 2 unit roundoffs relative.

Case rope_case(DType dt, int64_t heads, int64_t d, int64_t rot, const std::string& layout,
               bool llama3, int64_t tokens, uint32_t seed) {
  std::mt19937 rng(seed);
  Case c;
  const std::string t = dt_name(dt);
  c.name = absl::StrCat("rope ", t, " ", layout, " d=", d, " rot=", rot, " H=", heads,
                        llama3 ? " llama3" : "", " T=", tokens);
  const std::string ty = absl::StrCat(t, "[T,", heads, ",", d, "]");
  std::string attrs = absl::StrCat("layout = \"", layout, "\", rotary_dim = ", rot);
  if (llama3) {
    absl::StrAppend(&attrs,
                    ", scaling = \"llama3\", scaling_factor = 8.0, scaling_high_freq_factor = 4.0, "
                    "scaling_low_freq_factor = 1.0, scaling_original_max_positions = 8192, "
                    "theta = 500000.0");
  } else {
    absl::StrAppend(&attrs, ", theta = 10000.0");
  }
  c.ir = graph_header({"T <= 4096"});
  absl::StrAppend(&c.ir, "  input %x : ", ty, "\n  input %positions : i32[T]\n",
                  "  %y = rope(%x, %positions) {", attrs, "} : ", ty, "\n  output y = %y\n}\n");
  c.inputs["x"] = random_floats({tokens, heads, d}, dt, rng, -2, 2);
  std::uniform_int_distribution<int32_t> pos(0, 4095);
  std::vector<int32_t> p(tokens);
  for (int32_t& x : p) x = pos(rng);
  p[0] = 0;
  c.inputs["positions"] = ints(p);
  c.symbols = {{"T", tokens}};
  c.tol = {{2e-3, 2 * unit_roundoff(dt)}};
  return c;
}

std::vector<Case> rope_sweep() {
  return {
      rope_case(DType::kBF16, 9, 64, 64, "half", false, 13, 11),  // SmolLM2 q
      rope_case(DType::kBF16, 3, 64, 64, "interleaved", true, 13, 12),
      rope_case(DType::kF16, 8, 128, 128, "half", true, 21, 13),  // Llama-3 style
      rope_case(DType::kF16, 2, 128, 128, "interleaved", false, 5, 14),
      rope_case(DType::kBF16, 4, 64, 32, "half", false, 9, 15),  // partial rotary
      rope_case(DType::kF16, 4, 128, 64, "interleaved", true, 9, 16),
  };
}

TEST(KernelsGpu, Rope) {
  REQUIRE_GPU();
  check_sweep(rope_sweep());
}

// ---------------------------------------------------------------------------------------------
// Gathers (embedding, last_token_rows) and casts are pure data movement: exact.

Case embedding_case(DType dt, int64_t vocab, int64_t h, int64_t tokens, uint32_t seed) {
  std::mt19937 rng(seed);
  Case c;
  const std::string t = dt_name(dt);
  c.name = absl::StrCat("embedding ", t, " V=", vocab, " h=", h, " T=", tokens);
  c.ir = graph_header({"T <= 4096"});
  absl::StrAppend(&c.ir, "  input %table : ", t, "[", vocab, ",", h, "]\n  input %ids : i32[T]\n",
                  "  %e = gather(%table, %ids) : ", t, "[T,", h, "]\n  output e = %e\n}\n");
  c.inputs["table"] = random_floats({vocab, h}, dt, rng, -3, 3);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(tokens);
  for (int32_t& x : ids) x = id(rng);
  ids[0] = 0;
  ids[tokens - 1] = static_cast<int32_t>(vocab - 1);
  c.inputs["ids"] = ints(ids);
  c.symbols = {{"T", tokens}};
  c.tol = {Tolerance::exact()};
  return c;
}

Case last_token_case(DType dt, int64_t h, const std::vector<int32_t>& q_lens, uint32_t seed) {
  std::mt19937 rng(seed);
  Case c;
  const std::string t = dt_name(dt);
  std::vector<int32_t> indptr = {0};
  for (int32_t n : q_lens) indptr.push_back(indptr.back() + n);
  const int64_t tokens = indptr.back(), seqs = static_cast<int64_t>(q_lens.size());
  c.name = absl::StrCat("last_token_rows ", t, " h=", h, " q_lens=", absl::StrJoin(q_lens, ","));
  c.ir = graph_header({"T <= 4096", "S <= 64"});
  absl::StrAppend(&c.ir, "  input %hidden : ", t, "[T,", h, "]\n  input %qo_indptr : i32[S+1]\n",
                  "  %l = last_token_rows(%hidden, %qo_indptr) : ", t, "[S,", h,
                  "]\n  output l = %l\n}\n");
  c.inputs["hidden"] = random_floats({tokens, h}, dt, rng, -3, 3);
  c.inputs["qo_indptr"] = ints(indptr);
  c.symbols = {{"T", tokens}, {"S", seqs}};
  c.tol = {Tolerance::exact()};
  return c;
}

std::vector<Case> gather_sweep() {
  return {
      embedding_case(DType::kBF16, 1000, 576, 37, 21),
      embedding_case(DType::kF16, 513, 100, 9, 22),  // 100 % 8 != 0: 8-byte vectors
      embedding_case(DType::kBF16, 64, 2048, 300, 23),
      last_token_case(DType::kBF16, 576, {7, 1, 30}, 24),
      last_token_case(DType::kF16, 256, {1}, 25),
      last_token_case(DType::kF16, 100, {3, 64, 2, 1, 9}, 26),
  };
}

TEST(KernelsGpu, EmbeddingAndLastTokenRows) {
  REQUIRE_GPU();
  check_sweep(gather_sweep());
}

// ---------------------------------------------------------------------------------------------
// fused_elementwise: SwiGLU, a broadcast bias add, a silu-free mix, and the f32 logits cast.
// Bound: fp32 math on both sides, one rounding to the output dtype: 2 unit roundoffs relative.

Case elementwise_case(const std::string& label, const std::string& expr, DType out,
                      const std::vector<std::pair<DType, std::vector<int64_t>>>& ins,
                      std::vector<int64_t> out_shape, int64_t tokens, uint32_t seed) {
  std::mt19937 rng(seed);
  Case c;
  auto shape_str = [](const std::vector<int64_t>& s) {
    std::vector<std::string> d;
    for (int64_t x : s) d.push_back(x < 0 ? "T" : absl::StrCat(x));
    return absl::StrCat("[", absl::StrJoin(d, ","), "]");
  };
  auto resolved = [&](std::vector<int64_t> s) {
    for (int64_t& x : s) x = x < 0 ? tokens : x;
    return s;
  };
  c.name = absl::StrCat("fused_elementwise ", label, " ", dt_name(out), " `", expr, "` T=", tokens);
  c.ir = graph_header({"T <= 4096"});
  std::vector<std::string> args;
  for (size_t i = 0; i < ins.size(); ++i) {
    const std::string n = absl::StrCat("in", i);
    absl::StrAppend(&c.ir, "  input %", n, " : ", dt_name(ins[i].first), shape_str(ins[i].second),
                    "\n");
    args.push_back("%" + n);
    c.inputs[n] = random_floats(resolved(ins[i].second), ins[i].first, rng, -4, 4);
  }
  absl::StrAppend(&c.ir, "  %y = fused_elementwise(", absl::StrJoin(args, ", "),
                  ") {dtype = ", dt_name(out), ", expr = \"", expr, "\"} : ", dt_name(out),
                  shape_str(out_shape), "\n  output y = %y\n}\n");
  c.symbols = {{"T", tokens}};
  // "mix" subtracts terms up to ~200: allow fp32 cancellation error in absolute terms.
  c.tol = {{label == "mix" ? 1e-3 : 1e-6, 2 * unit_roundoff(out) + 1e-6}};
  return c;
}

std::vector<Case> elementwise_sweep() {
  using DT = DType;
  return {
      elementwise_case("swiglu", "mul(silu($0), $1)", DT::kBF16,
                       {{DT::kBF16, {-1, 1536}}, {DT::kBF16, {-1, 1536}}}, {-1, 1536}, 19, 31),
      elementwise_case("swiglu", "mul(silu($0), $1)", DT::kF16,
                       {{DT::kF16, {-1, 1000}}, {DT::kF16, {-1, 1000}}}, {-1, 1000}, 5, 32),
      elementwise_case("bias", "add($0, $1)", DT::kBF16,
                       {{DT::kBF16, {-1, 576}}, {DT::kBF16, {576}}}, {-1, 576}, 23, 33),
      elementwise_case("bias", "add($0, $1)", DT::kF16,
                       {{DT::kF16, {-1, 3, 64}}, {DT::kF16, {3, 1}}}, {-1, 3, 64}, 11, 34),
      elementwise_case("logits", "$0", DT::kF32, {{DT::kBF16, {-1, 49152}}}, {-1, 49152}, 3, 35),
      elementwise_case("mix", "sub(mul($0, exp(neg($1))), rsqrt(add(mul($1, $1), 1.5)))", DT::kF16,
                       {{DT::kF16, {-1, 256}}, {DT::kF16, {-1, 256}}}, {-1, 256}, 7, 36),
  };
}

TEST(KernelsGpu, FusedElementwise) {
  REQUIRE_GPU();
  check_sweep(elementwise_sweep());
}

// ---------------------------------------------------------------------------------------------
// flash_attention: kv_append + prefill, or kv_append + split-KV decode + merge, over a paged cache
// with scattered pages. Inputs O(1) (q, k in [-2, 2]: softmax neither flat nor one-hot), the
// reference in fp32. Bound: the GPU rounds P to the dtype before P·V and the output once:
// bf16 |err| <= 2e-2, f16 |err| <= 4e-3. The caches (kv_append) must match exactly.

struct SeqSpec {
  int32_t cached;  // KV rows already in the cache
  int32_t q_len;   // new tokens this step
};

// `extra_attrs` is appended to flash_attention's attributes (e.g. ", split_kv = 8"). `fp8_kv`:
// the caches are fp8e4m3 with their scale arrays (issue 14); see fp8 bounds below.
Case attention_case(DType dt, int64_t d, int64_t hq, int64_t hkv, int64_t page_size,
                    const std::vector<SeqSpec>& seqs, bool decode, uint32_t seed,
                    const std::string& extra_attrs = "", float q_amp = 2, bool fp8_kv = false) {
  std::mt19937 rng(seed);
  Case c;
  const std::string t = dt_name(dt);
  std::vector<std::string> shape;
  for (const SeqSpec& s : seqs) shape.push_back(absl::StrCat(s.cached, "+", s.q_len));
  c.name = absl::StrCat(decode ? "attention decode " : "attention prefill ", t,
                        fp8_kv ? " fp8e4m3-kv" : "", " d=", d, " Hq=", hq, " Hkv=", hkv,
                        " page=", page_size, " seqs(cached+new)=", absl::StrJoin(shape, ","),
                        extra_attrs, q_amp != 2 ? absl::StrCat(" |q|<=", q_amp) : "");
  c.prefill = !decode;
  // Pages: each sequence's pages drawn from a shuffled pool larger than needed (scattered).
  int64_t pages_needed = 0;
  for (const SeqSpec& s : seqs) pages_needed += (s.cached + s.q_len + page_size - 1) / page_size;
  const int64_t pool = pages_needed + 7;
  std::vector<int32_t> perm(pool);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> qo_indptr = {0}, kv_page_indptr = {0}, kv_page_indices, last_page_len,
                       positions, slot_mapping;
  size_t next_page = 0;
  for (const SeqSpec& s : seqs) {
    const int32_t kv_len = s.cached + s.q_len;
    const int32_t pages = static_cast<int32_t>((kv_len + page_size - 1) / page_size);
    std::vector<int32_t> mine(perm.begin() + next_page, perm.begin() + next_page + pages);
    next_page += pages;
    kv_page_indices.insert(kv_page_indices.end(), mine.begin(), mine.end());
    kv_page_indptr.push_back(kv_page_indptr.back() + pages);
    last_page_len.push_back(static_cast<int32_t>(kv_len - (pages - 1) * page_size));
    qo_indptr.push_back(qo_indptr.back() + s.q_len);
    for (int32_t p = s.cached; p < kv_len; ++p) {
      positions.push_back(p);
      slot_mapping.push_back(static_cast<int32_t>(mine[p / page_size] * page_size + p % page_size));
    }
  }
  const int64_t tokens = qo_indptr.back(), num_seqs = static_cast<int64_t>(seqs.size());
  const std::string q_ty = absl::StrCat(t, "[T,", hq, ",", d, "]");
  const std::string kv_ty = absl::StrCat(t, "[T,", hkv, ",", d, "]");
  const std::string cache_ty =
      absl::StrCat(fp8_kv ? "fp8e4m3" : t, "[NP,", page_size, ",", hkv, ",", d, "]");
  const std::string scale_ty = absl::StrCat("f32[NP,", page_size, ",", hkv, "]");
  c.ir = graph_header({"T <= 4096", "S <= 64", "P <= 65536", "NP <= 1048576", "K <= 65536"});
  absl::StrAppend(
      &c.ir, "  input %q : ", q_ty, "\n  input %k : ", kv_ty, "\n  input %v : ", kv_ty,
      "\n  input %k_cache : ", cache_ty, "\n  input %v_cache : ", cache_ty,
      fp8_kv ? absl::StrCat("\n  input %k_scales : ", scale_ty, "\n  input %v_scales : ", scale_ty)
             : "",
      "\n  input %positions : i32[T]\n  input %slot_mapping : i32[T]\n"
      "  input %qo_indptr : i32[S+1]\n  input %kv_page_indptr : i32[S+1]\n"
      "  input %kv_page_indices : i32[P]\n  input %kv_last_page_len : i32[S]\n"
      "  %o, %kc, %vc",
      fp8_kv ? ", %k_scales_out, %v_scales_out" : "",
      " = flash_attention(%q, %k, %v, %k_cache, %v_cache, %positions, "
      "%slot_mapping, %qo_indptr, %kv_page_indptr, %kv_page_indices, %kv_last_page_len",
      fp8_kv ? ", %k_scales, %v_scales" : "",
      ") {scale = ", absl::StrFormat("%.17g", 1.0 / std::sqrt(static_cast<double>(d))), extra_attrs,
      "} : ", q_ty, ", ", cache_ty, ", ", cache_ty,
      fp8_kv ? absl::StrCat(", ", scale_ty, ", ", scale_ty) : "", "\n  output o = %o\n}\n");
  c.inputs["q"] = random_floats({tokens, hq, d}, dt, rng, -q_amp, q_amp);
  c.inputs["k"] = random_floats({tokens, hkv, d}, dt, rng, -2, 2);
  c.inputs["v"] = random_floats({tokens, hkv, d}, dt, rng, -1, 1);
  // The whole pool is random: earlier tokens' K/V, and garbage in slots no sequence owns.
  c.caches["k_cache"] = random_floats({pool, page_size, hkv, d}, dt, rng, -2, 2);
  c.caches["v_cache"] = random_floats({pool, page_size, hkv, d}, dt, rng, -1, 1);
  if (fp8_kv) {
    // The pool as earlier KV appends left it: every row quantized (codes, and a scale per row).
    for (const char* name : {"k", "v"}) {
      HostTensor& cache = c.caches[absl::StrCat(name, "_cache")];
      cache.dtype = DType::kFP8E4M3;
      HostTensor scales =
          HostTensor::floats({pool, page_size, hkv}, std::vector<float>(pool * page_size * hkv));
      std::vector<float> row(d);
      for (int64_t r = 0; r < pool * page_size * hkv; ++r) {
        std::copy(cache.f.begin() + r * d, cache.f.begin() + (r + 1) * d, row.begin());
        scales.f[r] = quantize_row_fp8e4m3(row.data(), d, cache.f.data() + r * d);
      }
      c.caches[absl::StrCat(name, "_scales")] = std::move(scales);
    }
  }
  c.inputs["positions"] = ints(positions);
  c.inputs["slot_mapping"] = ints(slot_mapping);
  c.inputs["qo_indptr"] = ints(qo_indptr);
  c.inputs["kv_page_indptr"] = ints(kv_page_indptr);
  c.inputs["kv_page_indices"] = ints(kv_page_indices);
  c.inputs["kv_last_page_len"] = ints(last_page_len);
  int64_t max_kv = 0;
  for (const SeqSpec& s : seqs) max_kv = std::max<int64_t>(max_kv, s.cached + s.q_len);
  c.symbols = {{"T", tokens},
               {"S", num_seqs},
               {"P", static_cast<int64_t>(kv_page_indices.size())},
               {"NP", pool},
               {"K", max_kv}};
  c.tol = {{dt == DType::kBF16 ? 2e-2 : 4e-3, 0}};
  return c;
}

// fp8e4m3 caches (issue 14). The GPU's KV append quantizes exactly the bf16/f16 rows the
// reference's kv_write gets, with the same f32 operations (scale = amax / 448, x * (448 / amax),
// round to nearest even): codes and scales must match exactly. Attention then reads the same
// codes on both sides; the GPU dequantizes code * scale into its 16-bit tile (one more rounding of
// 2^-9 relative for bf16, 2^-12 for f16, on |k| <= 2, |v| <= 1) before the same mma path, so the
// output bound is the 16-bit attention bound above (bf16 |err| <= 2e-2, f16 <= 4e-3) plus that
// rounding's effect: a score moves by at most 2^-9 * Σ|q_i k_i| * scale <= 2^-9 * 2 * 2 * d /
// sqrt(d) (0.125 at d = 128, ~0.02 for random signs), an output by about as much relatively: so
// 3e-2 for bf16 and 5e-3 for f16.
Case fp8_attention_case(DType dt, int64_t d, int64_t hq, int64_t hkv, int64_t page_size,
                        const std::vector<SeqSpec>& seqs, bool decode, uint32_t seed,
                        const std::string& extra_attrs = "") {
  Case c = attention_case(dt, d, hq, hkv, page_size, seqs, decode, seed, extra_attrs, 2, true);
  c.tol = {{dt == DType::kBF16 ? 3e-2 : 5e-3, 0}};
  c.cache_tol = Tolerance::exact();
  c.scale_tol = Tolerance::exact();
  return c;
}

std::vector<Case> prefill_fp8_sweep() {
  using DT = DType;
  const std::string pipe = ", prefill_kernel = \"pipelined\"";
  return {
      // SmolLM2's shape (d64, G=3), chunked prefill beside a 1-token sequence; simple kernel.
      fp8_attention_case(DT::kBF16, 64, 9, 3, 16, {{0, 37}, {100, 70}, {16, 1}}, false, 141),
      // d128, G=4, f16; page size 1 (every row on its own scattered page).
      fp8_attention_case(DT::kF16, 128, 8, 2, 16, {{0, 130}, {33, 50}}, false, 142),
      fp8_attention_case(DT::kBF16, 128, 4, 4, 1, {{0, 45}, {20, 19}, {0, 3}}, false, 143),
      // d80: 5 pieces of 16 codes per row.
      fp8_attention_case(DT::kBF16, 80, 8, 2, 16, {{0, 77}, {40, 9}}, false, 144),
      // The pipelined kernel: more tiles than stages, G 8 at page 64, d64 with its 128-row KV tile.
      fp8_attention_case(DT::kBF16, 128, 8, 2, 16, {{0, 301}, {257, 200}, {40, 1}}, false, 145,
                         pipe),
      fp8_attention_case(DT::kF16, 128, 32, 4, 64, {{0, 37}, {100, 91}, {7, 1}}, false, 146, pipe),
      fp8_attention_case(DT::kBF16, 64, 9, 3, 16, {{0, 37}, {100, 70}, {16, 1}}, false, 147, pipe),
      fp8_attention_case(DT::kBF16, 128, 8, 2, 16, {{0, 150}, {3, 2}}, false, 148,
                         pipe + ", stages = 4, tile_kv = 32"),
      fp8_attention_case(DT::kBF16, 80, 8, 2, 16, {{50, 130}}, false, 149, pipe),
  };
}

std::vector<Case> decode_fp8_sweep() {
  using DT = DType;
  return {
      // Batch 1, 2k context: split-KV and the merge; batch 5 with lengths 1 to 2047.
      fp8_attention_case(DT::kBF16, 64, 9, 3, 16, {{1999, 1}}, true, 151),
      fp8_attention_case(DT::kBF16, 128, 8, 2, 16,
                         {{0, 1}, {16, 1}, {299, 1}, {1023, 1}, {2046, 1}}, true, 152),
      fp8_attention_case(DT::kF16, 128, 4, 4, 1, {{1, 1}, {32, 1}, {699, 1}}, true, 153),
      fp8_attention_case(DT::kBF16, 128, 32, 8, 16, {{8191, 1}}, true, 154),
      // The knobs: 8 warps and 3 stages (unified max), tile 32, tile 64 with 2 warps and 4
      // stages (2 page registers per lane), 1 stage, a fixed split count.
      fp8_attention_case(DT::kF16, 128, 32, 4, 64, {{129, 1}, {2999, 1}}, true, 155,
                         ", decode_stages = 3, decode_warps = 8, softmax = \"unified_max\""),
      fp8_attention_case(DT::kBF16, 128, 8, 2, 16, {{1500, 1}, {9, 1}}, true, 159,
                         ", decode_tile_kv = 32, decode_warps = 4, decode_stages = 2"),
      fp8_attention_case(DT::kBF16, 64, 8, 8, 1, {{5, 1}, {333, 1}, {1030, 1}}, true, 156,
                         ", decode_stages = 4, decode_warps = 2, decode_tile_kv = 64"),
      fp8_attention_case(DT::kBF16, 128, 32, 4, 64, {{0, 1}, {63, 1}, {700, 1}}, true, 157,
                         ", decode_stages = 1, split_kv = 8"),
      // head_dim 80: 5 pieces of 16 codes per row, 80 per K tile (not a whole number per lane).
      fp8_attention_case(DT::kBF16, 80, 8, 2, 16, {{900, 1}, {3, 1}}, true, 158),
  };
}

std::vector<Case> prefill_sweep() {
  using DT = DType;
  return {
      // SmolLM2 shape (d64, 9/3 heads: G=3); prompt lengths not multiples of the 64-row tiles, a
      // sequence with cached context (chunked prefill) and a 1-token sequence in the same step.
      attention_case(DT::kBF16, 64, 9, 3, 16, {{0, 37}, {100, 70}, {16, 1}}, false, 41),
      attention_case(DT::kF16, 64, 9, 3, 16, {{0, 200}, {5, 17}}, false, 42),
      // d128, G=4 (Llama-3 style), f16 and bf16.
      attention_case(DT::kF16, 128, 8, 2, 16, {{0, 130}, {33, 50}}, false, 43),
      attention_case(DT::kBF16, 128, 8, 2, 16, {{0, 1}, {0, 96}, {250, 3}}, false, 44),
      // No GQA, page size 1 (every KV row on its own scattered page), odd lengths.
      attention_case(DT::kBF16, 128, 4, 4, 1, {{0, 45}, {20, 19}, {0, 3}}, false, 45),
      attention_case(DT::kF16, 64, 3, 3, 1, {{7, 33}}, false, 46),
  };
}

TEST(KernelsGpu, FlashAttentionPrefill) {
  REQUIRE_GPU();
  check_sweep(prefill_sweep());
}

// The pipelined prefill kernel (prefill_kernel = "pipelined"): head_dim 64/128, GQA 1/4/8, page
// sizes 1/16/64, odd lengths, pages crossing sequence ends (the last page part-filled, its tail
// slots random garbage), 1-token (decode-like) rows beside long prompts, cached context long
// enough for many KV tiles (unmasked tiles, the diagonal, and more tiles than pipeline stages),
// and the tuning knobs (warps, tile_kv, stages) each moved from the default once.
std::vector<Case> pipelined_prefill_sweep() {
  using DT = DType;
  const std::string pipe = ", prefill_kernel = \"pipelined\"";
  return {
      // d128, G=4 (Llama-3 style), page 16: 8 and 9 KV tiles, diagonal mid-tile.
      attention_case(DT::kBF16, 128, 8, 2, 16, {{0, 301}, {257, 200}, {40, 1}}, false, 61, pipe),
      attention_case(DT::kF16, 128, 8, 2, 16, {{0, 130}, {33, 50}, {0, 1}}, false, 62, pipe),
      // GQA 8 (32/4 heads), page 64, a prompt shorter than one page and one crossing three.
      attention_case(DT::kBF16, 128, 32, 4, 64, {{0, 37}, {100, 91}, {7, 1}}, false, 63, pipe),
      // No GQA, page size 1 (every KV row on its own scattered page), odd lengths.
      attention_case(DT::kBF16, 128, 4, 4, 1, {{0, 45}, {20, 19}, {0, 3}, {500, 1}}, false, 64,
                     pipe),
      // d64, G=3 and G=1, pages 16 and 64.
      attention_case(DT::kBF16, 64, 9, 3, 16, {{0, 37}, {100, 70}, {16, 1}}, false, 65, pipe),
      attention_case(DT::kF16, 64, 3, 3, 64, {{7, 333}, {64, 64}}, false, 66, pipe),
      // G=4, d64: 12/3 heads.
      attention_case(DT::kF16, 64, 12, 3, 16, {{1000, 77}, {0, 129}}, false, 67, pipe),
      // Knobs: 3 and 4 stages (more tiles than stages, and fewer), 4 and 8 warps, tile_kv 32 and
      // 64 at d64 (the d64 cases above use the d64 default, 128).
      attention_case(DT::kBF16, 128, 8, 2, 16, {{700, 90}, {0, 5}}, false, 68,
                     pipe + ", stages = 3"),
      attention_case(DT::kBF16, 128, 8, 2, 16, {{0, 150}, {3, 2}}, false, 69,
                     pipe + ", stages = 4, tile_kv = 32"),
      attention_case(DT::kF16, 128, 8, 2, 64, {{190, 67}}, false, 70, pipe + ", warps = 4"),
      attention_case(DT::kBF16, 64, 8, 1, 16, {{333, 140}, {1, 1}}, false, 71,
                     pipe + ", tile_kv = 32"),
      attention_case(DT::kF16, 64, 8, 2, 16, {{90, 160}, {0, 2}}, false, 72,
                     pipe + ", warps = 8, tile_kv = 64"),
  };
}

TEST(KernelsGpu, FlashAttentionPrefillPipelined) {
  REQUIRE_GPU();
  check_sweep(pipelined_prefill_sweep());
}

// The Hopper prefill kernel (prefill_kernel = "hopper", sm_90a only): head_dim 64/128, GQA 1/3/4/8,
// page sizes 1/16/64, odd lengths, pages crossing sequence ends, 1-token rows beside long prompts,
// cached context long enough for many KV tiles (more tiles than stages, so the producer waits on
// the ring's empty barriers and both consumers go through many ping-pong turns), query tiles where
// the second consumer's rows are all padding, and the knobs (tile_kv 64, stages 3 and 4).
std::vector<Case> hopper_prefill_sweep() {
  using DT = DType;
  const std::string hop = ", prefill_kernel = \"hopper\"";
  return {
      // d128, G=4 (Llama-3 style), page 16: up to 4 KV tiles of 128, the diagonal mid-tile.
      attention_case(DT::kBF16, 128, 8, 2, 16, {{0, 301}, {257, 200}, {40, 1}}, false, 81, hop),
      attention_case(DT::kF16, 128, 8, 2, 16, {{0, 130}, {33, 50}, {0, 1}}, false, 82, hop),
      // GQA 8 (32/4 heads), page 64, a prompt shorter than one page and one crossing three.
      attention_case(DT::kBF16, 128, 32, 4, 64, {{0, 37}, {100, 91}, {7, 1}}, false, 83, hop),
      // No GQA, page size 1 (every KV row on its own scattered page), odd lengths.
      attention_case(DT::kBF16, 128, 4, 4, 1, {{0, 45}, {20, 19}, {0, 3}, {500, 1}}, false, 84,
                     hop),
      // Chunked prefill with a long cached context: 9 KV tiles, 5 unmasked before the diagonal.
      attention_case(DT::kBF16, 128, 8, 2, 16, {{1000, 129}, {0, 600}}, false, 85, hop),
      // d64, G=3 and G=1, pages 16 and 64 (the d64 default of 3 stages).
      attention_case(DT::kBF16, 64, 9, 3, 16, {{0, 37}, {100, 70}, {16, 1}}, false, 86, hop),
      attention_case(DT::kF16, 64, 3, 3, 64, {{7, 333}, {64, 64}}, false, 87, hop),
      attention_case(DT::kF16, 64, 12, 3, 16, {{1000, 77}, {0, 129}}, false, 88, hop),
      // Knobs: tile_kv 64 (wgmma n = 64 for S) with 3 and 4 stages, 2 stages at d64.
      attention_case(DT::kBF16, 128, 8, 2, 16, {{700, 90}, {0, 5}}, false, 89,
                     hop + ", tile_kv = 64, stages = 3"),
      attention_case(DT::kF16, 128, 8, 2, 64, {{190, 267}}, false, 90,
                     hop + ", tile_kv = 64, stages = 4"),
      attention_case(DT::kBF16, 64, 8, 1, 16, {{333, 140}, {1, 1}}, false, 91,
                     hop + ", stages = 2"),
  };
}

TEST(KernelsGpu, FlashAttentionPrefillHopper) {
  REQUIRE_GPU();
  if (gpu().device->arch() != "sm_90a") {
    GTEST_SKIP() << "the hopper prefill kernel needs sm_90a (wgmma, setmaxnreg); this GPU is "
                 << gpu().device->arch();
  }
  check_sweep(hopper_prefill_sweep());
}

std::vector<Case> decode_sweep() {
  using DT = DType;
  return {
      // Batch 1 with a 2k context: split-KV (8 splits of 256 rows) and the LSE merge.
      attention_case(DT::kBF16, 64, 9, 3, 16, {{1999, 1}}, true, 51),
      // Batch 5, lengths from 1 (only the new token; 7 of 8 splits empty) to 2047.
      attention_case(DT::kBF16, 128, 8, 2, 16, {{0, 1}, {16, 1}, {299, 1}, {1023, 1}, {2046, 1}},
                     true, 52),
      attention_case(DT::kF16, 128, 4, 4, 1, {{1, 1}, {32, 1}, {128, 1}, {699, 1}, {1499, 1}}, true,
                     53),
      attention_case(DT::kF16, 64, 9, 3, 16, {{4, 1}}, true, 54),
      attention_case(DT::kF16, 64, 12, 3, 16, {{40, 1}, {1200, 1}}, true, 55),  // G=4, d64
      // The split count is chosen per step (up to 32); batch 1 at 8k gets the most splits, and a
      // fixed split_kv attribute (a tuning knob) overrides the policy.
      attention_case(DT::kBF16, 128, 32, 8, 16, {{8191, 1}}, true, 56),
      attention_case(DT::kBF16, 128, 32, 8, 16, {{3000, 1}, {17, 1}}, true, 57, ", split_kv = 8"),
      attention_case(DT::kBF16, 64, 9, 3, 16, {{5000, 1}}, true, 58, ", split_kv = 1"),
      // Pipeline depth, tile and warp counts (the autotuner's knobs); page size 64, G = 8.
      attention_case(DT::kBF16, 128, 32, 4, 64, {{0, 1}, {63, 1}, {700, 1}, {4100, 1}}, true, 59,
                     ", decode_stages = 1, decode_tile_kv = 32"),
      attention_case(DT::kF16, 128, 32, 4, 64, {{129, 1}, {2999, 1}}, true, 60,
                     ", decode_stages = 3, decode_warps = 8, split_blocks = 64"),
      attention_case(DT::kBF16, 64, 8, 8, 1, {{5, 1}, {333, 1}, {1030, 1}}, true, 61,
                     ", decode_stages = 4, decode_warps = 2, decode_tile_kv = 64"),
      // head_dim 80: an odd number of 16-wide k steps (the ldmatrix.x2 tail).
      attention_case(DT::kBF16, 80, 8, 2, 16, {{900, 1}, {3, 1}}, true, 68),
      // FlashDecoding++'s unified max: ordinary scores (the bound holds, exponential-free merge).
      attention_case(DT::kBF16, 128, 32, 8, 16, {{3000, 1}, {17, 1}, {0, 1}}, true, 62,
                     ", softmax = \"unified_max\""),
      attention_case(DT::kF16, 64, 9, 3, 1, {{1999, 1}, {40, 1}}, true, 63,
                     ", softmax = \"unified_max\", decode_stages = 3"),
      attention_case(DT::kBF16, 128, 32, 4, 64, {{8191, 1}, {64, 1}}, true, 64,
                     ", softmax = \"unified_max\", split_kv = 8"),
      // Adversarial scores: |q| up to 24 puts scaled scores far above the bound (the exact
      // online-softmax update and the LSE merge take over for those rows) ...
      attention_case(DT::kBF16, 128, 32, 8, 16, {{2047, 1}, {300, 1}}, true, 65,
                     ", softmax = \"unified_max\"", 24),
      attention_case(DT::kF16, 128, 8, 2, 16, {{1500, 1}, {9, 1}}, true, 66,
                     ", softmax = \"unified_max\", softmax_bound = 1.0", 6),
      // ... and a bound far above every score (rows start from their own max, fall back too).
      attention_case(DT::kF16, 64, 12, 3, 16, {{1200, 1}, {77, 1}}, true, 67,
                     ", softmax = \"unified_max\", softmax_bound = 200.0"),
  };
}

TEST(KernelsGpu, FlashAttentionDecode) {
  REQUIRE_GPU();
  check_sweep(decode_sweep());
}

// fp8e4m3 KV caches: kv_append quantizes, the prefill (simple and pipelined) and decode kernels
// dequantize (bounds at fp8_attention_case).
TEST(KernelsGpu, FlashAttentionPrefillFp8Kv) {
  REQUIRE_GPU();
  check_sweep(prefill_fp8_sweep());
}

TEST(KernelsGpu, FlashAttentionDecodeFp8Kv) {
  REQUIRE_GPU();
  check_sweep(decode_fp8_sweep());
}

// fuse-horizontal's attention block: q, k, v are strided-rows slices of one [T, (Hq + 2 Hkv) d]
// QKV result, and the attention's two ropes and its KV append lower to one rope_kv_append launch
// (then prefill, or decode + merge). The cache rows are rope outputs, so they get rope's bound.
Case rope_attention_case(DType dt, int64_t d, int64_t hq, int64_t hkv, int64_t page_size,
                         const std::vector<SeqSpec>& seqs, bool decode, const std::string& layout,
                         uint32_t seed, bool fp8_kv = false) {
  Case c = fp8_kv ? fp8_attention_case(dt, d, hq, hkv, page_size, seqs, decode, seed)
                  : attention_case(dt, d, hq, hkv, page_size, seqs, decode, seed);
  c.name = absl::StrCat("rope+", c.name, " ", layout);
  const std::string t = dt_name(dt);
  const int64_t n = (hq + 2 * hkv) * d, tokens = c.inputs["q"].shape[0];
  auto head_ty = [&](int64_t h) { return absl::StrCat(t, "[T,", h, ",", d, "]"); };
  auto slice = [&](const std::string& name, int64_t start, int64_t h) {
    return absl::StrCat("  %", name, "s = slice(%qkv) {axis = 1, start = ", start, ", end = ",
                        start + h * d, "} : ", t, "[T,", h * d, "]\n  %", name, " = reshape(%",
                        name, "s) {shape = [0, ", h, ", ", d, "]} : ", head_ty(h), "\n");
  };
  const std::string rope_attrs = absl::StrCat("layout = \"", layout, "\", rotary_dim = ", d,
                                              ", theta = 10000.0");
  const std::string nodes = absl::StrCat(
      "  %qkv = neg(%x_qkv) : ", t, "[T,", n, "]\n", slice("q0", 0, hq), slice("k0", hq * d, hkv), slice("v", (hq + hkv) * d, hkv),
      "  %q = rope(%q0, %positions) {", rope_attrs, "} : ", head_ty(hq), "\n",
      "  %k = rope(%k0, %positions) {", rope_attrs, "} : ", head_ty(hkv), "\n");
  // The inputs q, k, v become one input negated into %qkv (a computed value, as the QKV GEMM's
  // result is: the GPU keeps views of computed values only); the nodes above go before the
  // attention.
  std::string ir = c.ir;
  const std::string qkv_decl = absl::StrCat("  input %x_qkv : ", t, "[T,", n, "]\n");
  for (const std::string& name : {"q", "k", "v"}) {
    const size_t at = ir.find(absl::StrCat("  input %", name, " : "));
    ir.erase(at, ir.find('\n', at) + 1 - at);
  }
  ir.insert(ir.find("  input %k_cache"), qkv_decl);
  ir.insert(ir.find("  %o, %kc, %vc"), nodes);
  c.ir = ir;
  std::vector<float> qkv;
  for (int64_t r = 0; r < tokens; ++r) {
    for (const std::string& name : {"q", "k", "v"}) {
      const HostTensor& x = c.inputs[name];
      const int64_t w = x.numel() / tokens;
      for (int64_t e = r * w; e < (r + 1) * w; ++e) qkv.push_back(-x.f[e]);  // %qkv = neg
    }
  }
  for (const std::string& name : {"q", "k", "v"}) c.inputs.erase(name);
  c.inputs["x_qkv"] = HostTensor::floats({tokens, n}, std::move(qkv), dt);
  c.cache_tol = {2e-3, 2 * unit_roundoff(dt)};  // rope's bound (see rope_case)
  if (fp8_kv) {
    // The K rows are rope outputs: the GPU's (rounded to the dtype, within rope's 2 unit
    // roundoffs of the reference's fp32 rotation) feed its quantizer. A row's scale follows its
    // amax: within 2 unit roundoffs relatively. A code x * 448 / amax moves by about 4 unit
    // roundoffs relatively, so it can cross one rounding boundary: one e4m3 step, at most 2^-3 of
    // its value for normal codes and 2^-9 absolutely for subnormal ones. V rows are copied
    // unrotated: exact, within the same bound.
    c.cache_tol = {std::ldexp(1.0, -9), 0.125};
    c.scale_tol = {0, 2 * unit_roundoff(dt)};
  }
  return c;
}

TEST(KernelsGpu, RopeKvAppendBeforeAttention) {
  REQUIRE_GPU();
  using DT = DType;
  const std::vector<Case> cases = {
      // SmolLM2's shape (d64, 9/3 heads, interleaved as GGUF stores it): decode and a ragged
      // prefill; Llama-3's (d128, 32/8, rotate-half): decode of 3 sequences and a prefill with
      // cached context; page size 1 (scattered rows) and 64.
      rope_attention_case(DT::kBF16, 64, 9, 3, 16, {{1999, 1}, {40, 1}}, true, "interleaved", 71),
      rope_attention_case(DT::kBF16, 64, 9, 3, 16, {{0, 37}, {100, 70}, {16, 1}}, false,
                          "interleaved", 72),
      rope_attention_case(DT::kBF16, 128, 32, 8, 16, {{3000, 1}, {17, 1}, {0, 1}}, true, "half",
                          73),
      rope_attention_case(DT::kF16, 128, 8, 2, 1, {{33, 50}, {0, 3}}, false, "half", 74),
      rope_attention_case(DT::kF16, 64, 12, 3, 64, {{1200, 1}, {77, 1}}, true, "half", 75),
  };
  std::vector<Lowered> lowered;
  for (const Case& c : cases) {
    lowered.push_back(lower_case(c));
    // One rope_kv_append, no rope or kv_append launch of its own.
    std::set<KernelFamily> families;
    for (const PlanLaunch& l : lowered.back().plan.launches) {
      families.insert(lowered.back().plan.kernels[l.kernel].family);
    }
    EXPECT_TRUE(families.count(KernelFamily::kRopeKvAppend)) << c.name;
    EXPECT_FALSE(families.count(KernelFamily::kRope)) << c.name;
    EXPECT_FALSE(families.count(KernelFamily::kKvAppend)) << c.name;
  }
  std::vector<const LoweredGraph*> plans;
  for (const Lowered& l : lowered) plans.push_back(&l.plan);
  build_all(plans);
  if (::testing::Test::HasFatalFailure()) return;
  for (size_t i = 0; i < cases.size(); ++i) check_case(cases[i], lowered[i]);
}

std::vector<Case> rope_attention_fp8_sweep() {
  using DT = DType;
  return {
      rope_attention_case(DT::kBF16, 64, 9, 3, 16, {{1999, 1}, {40, 1}}, true, "interleaved", 171,
                          true),
      rope_attention_case(DT::kBF16, 64, 9, 3, 16, {{0, 37}, {100, 70}, {16, 1}}, false,
                          "interleaved", 172, true),
      rope_attention_case(DT::kBF16, 128, 32, 8, 16, {{3000, 1}, {17, 1}, {0, 1}}, true, "half",
                          173, true),
      rope_attention_case(DT::kF16, 128, 8, 2, 1, {{33, 50}, {0, 3}}, false, "half", 174, true),
  };
}

// rope_kv_append into an fp8e4m3 cache: the ropes' results exactly as the 16-bit variant writes
// them, the cache rows quantized from them (bounds at rope_attention_case).
TEST(KernelsGpu, RopeKvAppendFp8KvBeforeAttention) {
  REQUIRE_GPU();
  std::vector<Case> cases = rope_attention_fp8_sweep();
  std::vector<Lowered> lowered;
  for (const Case& c : cases) {
    lowered.push_back(lower_case(c));
    std::set<std::string> keys;
    for (const PlanLaunch& l : lowered.back().plan.launches) {
      keys.insert(lowered.back().plan.kernels[l.kernel].key);
    }
    EXPECT_TRUE(std::any_of(keys.begin(), keys.end(), [](const std::string& k) {
      return k.rfind("rope_kv_append_", 0) == 0 && k.find("_fp8kv") != std::string::npos;
    })) << c.name;
  }
  std::vector<const LoweredGraph*> plans;
  for (const Lowered& l : lowered) plans.push_back(&l.plan);
  build_all(plans);
  if (::testing::Test::HasFatalFailure()) return;
  for (size_t i = 0; i < cases.size(); ++i) check_case(cases[i], lowered[i]);
}

// A test kernel over kernels/fp8.cuh: x[n] through the arch's encoder (hw) and the software one
// (sw), and the 256 codes through the attention kernels' decoder (decoded, scale 1).
std::string fp8_conversions_source() {
  return R"(#include "fp8.cuh"
extern "C" __global__ void fp8_conversions(const float* x, unsigned char* hw, unsigned char* sw,
                                           float* decoded, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (2 * i + 1 < n) {
    const unsigned int c = kiln_k::fp8x2_encode(x[2 * i], x[2 * i + 1]);
    hw[2 * i] = c & 0xff;
    hw[2 * i + 1] = c >> 8;
    sw[2 * i] = kiln_k::fp8_encode_soft(x[2 * i]);
    sw[2 * i + 1] = kiln_k::fp8_encode_soft(x[2 * i + 1]);
  }
  if (i < 128) {  // codes 2i, 2i + 1 through the attention kernels' decoder (scale 1)
    const unsigned int h = kiln_k::fp8x2_to_f16x2_times_2m8(2 * i | ((2 * i + 1) << 8));
    decoded[2 * i] = kiln_k::to_float(kiln_k::f16{(unsigned short)(h & 0xffff)}) * 256.f;
    decoded[2 * i + 1] = kiln_k::to_float(kiln_k::f16{(unsigned short)(h >> 16)}) * 256.f;
  }
}
)";
}

// kernels/fp8.cuh's conversions on the device against models/dequantize.h's: the encoder the
// arch compiles (cvt.rn.satfinite.e4m3x2.f32 on sm_89+) and the software encoder sm_80 uses,
// both on every midpoint between neighbouring codes and the floats one ulp either side, the
// codes themselves, out-of-range values and random floats; and the decoder on all 256 codes.
TEST(KernelsGpu, Fp8ConversionsMatchTheReference) {
  REQUIRE_GPU();
  GpuContext& ctx = gpu();
  std::vector<float> probes;
  for (int c = 0; c < 0x7e; ++c) {
    const float a = fp8e4m3_to_f32(static_cast<uint8_t>(c)), b = fp8e4m3_to_f32(c + 1);
    const float mid = (a + b) / 2;
    for (float x : {a, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
      probes.push_back(x);
      probes.push_back(-x);
    }
  }
  for (float x : {448.0f, 449.0f, 464.0f, 1e30f, INFINITY, -INFINITY, -1e30f}) probes.push_back(x);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> e(-14, 10);
  std::uniform_real_distribution<float> m(1.0f, 2.0f);
  while (probes.size() % 2 != 0 || probes.size() < 65536) {
    probes.push_back(std::ldexp(m(rng), e(rng)) * (rng() % 2 ? 1 : -1));
  }
  const int n = static_cast<int>(probes.size());
  absl::StatusOr<std::vector<CompiledKernel>> built = build_kernels(
      {{"fp8_conversions", fp8_conversions_source()}}, ctx.device->arch(), ctx.cache.get(), 1);
  ASSERT_TRUE(built.ok()) << built.status();
  absl::StatusOr<GpuKernel> k = ctx.device->load_kernel((*built)[0].cubin, "fp8_conversions");
  ASSERT_TRUE(k.ok()) << k.status();
  GpuDevice& dev = *ctx.device;
  auto x = dev.alloc(4 * n), hw = dev.alloc(n), sw = dev.alloc(n), dec = dev.alloc(4 * 256);
  ASSERT_TRUE(x.ok() && hw.ok() && sw.ok() && dec.ok());
  ASSERT_TRUE(dev.upload(x->ptr(), probes.data(), 4 * n).ok());
  KernelArgs a;
  a.ptr(x->ptr()).ptr(hw->ptr()).ptr(sw->ptr()).ptr(dec->ptr()).i32(n);
  LaunchDims d;
  d.grid[0] = static_cast<unsigned>((n / 2 + 255) / 256);
  d.block[0] = 256;
  ASSERT_TRUE(dev.launch(*k, d, a).ok());
  ASSERT_TRUE(dev.synchronize().ok());
  std::vector<uint8_t> got_hw(n), got_sw(n);
  std::vector<float> decoded(256);
  ASSERT_TRUE(dev.download(got_hw.data(), hw->ptr(), n).ok());
  ASSERT_TRUE(dev.download(got_sw.data(), sw->ptr(), n).ok());
  ASSERT_TRUE(dev.download(decoded.data(), dec->ptr(), 4 * 256).ok());
  int bad_hw = 0, bad_sw = 0;
  for (int i = 0; i < n; ++i) {
    const uint8_t want = f32_to_fp8e4m3(probes[i]);
    if (got_hw[i] != want && bad_hw++ < 5) {
      ADD_FAILURE() << "encoder " << probes[i] << ": 0x" << std::hex << int{got_hw[i]}
                    << ", reference 0x" << int{want};
    }
    if (got_sw[i] != want && bad_sw++ < 5) {
      ADD_FAILURE() << "software encoder " << probes[i] << ": 0x" << std::hex << int{got_sw[i]}
                    << ", reference 0x" << int{want};
    }
  }
  EXPECT_EQ(bad_hw, 0);
  EXPECT_EQ(bad_sw, 0);
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;  // NaN: never stored (satfinite), decodes as 480
    EXPECT_EQ(decoded[c], fp8e4m3_to_f32(static_cast<uint8_t>(c))) << "code " << c;
  }
}

// ---------------------------------------------------------------------------------------------
// sampling: greedy rows must return the argmax (lowest index on ties). For temperature / top-k /
// top-p rows, the chosen id must lie in the allowed set (top-k, then the smallest top-p prefix;
// the p boundary widened by 1e-4 for float sums) and be the host's inverse-CDF pick of the row's
// uniform over that set in index order, unless the uniform falls within 2e-3 of the kept mass of
// the pick's CDF boundary (float accumulation order).

struct SampleRow {
  float temperature;
  int32_t top_k;
  float top_p;
};

std::string check_sample_row(const float* logits, int64_t vocab, const SampleRow& r, float u,
                             int32_t got) {
  if (got < 0 || got >= vocab) return absl::StrCat("id ", got, " out of [0, ", vocab, ")");
  const int64_t argmax = std::max_element(logits, logits + vocab) - logits;  // first max
  if (r.temperature <= 0 || r.top_k == 1) {
    return got == argmax ? "" : absl::StrCat("greedy: got ", got, ", argmax ", argmax);
  }
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  std::vector<double> w(vocab);
  for (int64_t i = 0; i < vocab; ++i) {
    w[i] = std::exp((static_cast<double>(logits[i]) - logits[argmax]) / r.temperature);
  }
  int64_t keep = (r.top_k > 0 && r.top_k < vocab) ? r.top_k : vocab;
  double total = 0;
  for (int64_t j = 0; j < keep; ++j) total += w[order[j]];
  int64_t keep_p = keep, keep_wide = keep;
  if (r.top_p < 1) {
    double acc = 0;
    keep_p = keep_wide = -1;
    for (int64_t j = 0; j < keep; ++j) {
      acc += w[order[j]];
      if (keep_p < 0 && acc >= r.top_p * total) keep_p = j + 1;
      if (keep_wide < 0 && acc >= std::min(1.0, r.top_p * (1 + 1e-4)) * total) keep_wide = j + 1;
    }
    if (keep_p < 0) keep_p = keep;
    if (keep_wide < 0) keep_wide = keep;
  }
  const int64_t rank = std::find(order.begin(), order.end(), got) - order.begin();
  if (rank >= keep_wide) {
    return absl::StrCat("id ", got, " (logit ", logits[got], ", rank ", rank,
                        ") is outside the allowed set of the top ", keep_wide, " tokens");
  }
  // Inverse CDF in index order over the kept set.
  std::vector<bool> kept(vocab, false);
  double mass = 0;
  for (int64_t j = 0; j < keep_p; ++j) kept[order[j]] = true, mass += w[order[j]];
  const double target = u * mass;
  double acc = 0, before_got = -1, after_got = -1;
  int64_t want = -1;
  for (int64_t i = 0; i < vocab; ++i) {
    if (!kept[i] && i != got) continue;
    if (i == got) before_got = acc;
    if (kept[i]) acc += w[i];
    if (i == got) after_got = acc;
    if (want < 0 && kept[i] && acc > target) want = i;
  }
  if (want < 0) want = argmax;
  if (got == want) return "";
  const double slack = 2e-3 * mass;
  if (std::fabs(before_got - target) <= slack || std::fabs(after_got - target) <= slack) return "";
  return absl::StrCat("id ", got, " covers CDF [", before_got / mass, ", ", after_got / mass,
                      ") but the uniform is ", u, " (host pick ", want, ")");
}

TEST(KernelsGpu, Sampling) {
  REQUIRE_GPU();
  const std::vector<SampleRow> rows = {
      {0.0f, 0, 1.0f},  {0.7f, 1, 1.0f}, {1.0f, 0, 1.0f}, {0.8f, 50, 1.0f}, {1.0f, 0, 0.9f},
      {0.6f, 40, 0.8f}, {1.3f, 5, 1.0f}, {1.0f, 0, 0.5f}, {0.0f, 7, 0.3f},  {2.0f, 1000, 0.95f},
  };
  const int64_t S = static_cast<int64_t>(rows.size());
  for (int64_t vocab : {int64_t{32003}, int64_t{151}}) {
    SCOPED_TRACE(absl::StrCat("vocab ", vocab));
    Case c;
    c.name = absl::StrCat("sampling vocab=", vocab);
    c.ir = graph_header({"S <= 64"});
    absl::StrAppend(&c.ir, "  input %lg : f32[S,", vocab, "]\n",
                    "  %logits = fused_elementwise(%lg) {dtype = f32, expr = \"$0\"} : f32[S,",
                    vocab, "]\n  output logits = %logits\n}\n");
    c.symbols = {{"S", S}};
    Lowered l = lower_case(c, {.add_sampling = true});
    ASSERT_NE(l.graph, nullptr);
    const PlanLaunch* sample = nullptr;
    for (const PlanLaunch& k : l.plan.launches) {
      if (k.node == -1) sample = &k;
    }
    ASSERT_NE(sample, nullptr) << "lowering added no sampling launch";
    build_all({&l.plan});
    if (HasFatalFailure()) return;

    std::mt19937 rng(61 + vocab);
    GpuDevice& dev = *gpu().device;
    GpuRun run(*l.graph, l.plan, c);
    for (int round = 0; round < 4; ++round) {
      HostTensor lg = random_floats({S, vocab}, DType::kF32, rng, -6, 6);
      // Row 0: two equal maxima; greedy must take the lower index.
      lg.f[vocab / 3] = lg.f[vocab - 2] = 9.5f;
      std::vector<float> temperature, top_p, uniform;
      std::vector<int32_t> top_k;
      std::uniform_real_distribution<float> u01(0.f, 1.f);
      for (const SampleRow& r : rows) {
        temperature.push_back(r.temperature);
        top_k.push_back(r.top_k);
        top_p.push_back(r.top_p);
        uniform.push_back(std::min(u01(rng), 0.99999f));
      }
      std::map<RuntimeInput, DevicePtr> rt;
      std::vector<DeviceBuffer> keep;
      auto put = [&](RuntimeInput input, const void* data, size_t bytes) {
        absl::StatusOr<DeviceBuffer> b = dev.alloc(bytes);
        ASSERT_TRUE(b.ok()) << b.status();
        ASSERT_TRUE(dev.upload(b->ptr(), data, bytes).ok());
        rt[input] = b->ptr();
        run.set_runtime(input, b->ptr());
        keep.push_back(std::move(*b));
      };
      put(RuntimeInput::kTemperature, temperature.data(), S * 4);
      put(RuntimeInput::kTopK, top_k.data(), S * 4);
      put(RuntimeInput::kTopP, top_p.data(), S * 4);
      put(RuntimeInput::kUniform, uniform.data(), S * 4);
      std::vector<int32_t> poison(S, -7);
      put(RuntimeInput::kSampledIds, poison.data(), S * 4);
      // The logits value is the graph output: upload straight into its buffer.
      absl::StatusOr<DevicePtr> logits = run.buffer(sample->args[1].value);
      ASSERT_TRUE(logits.ok()) << logits.status();
      ASSERT_TRUE(dev.upload(*logits, lg.f.data(), lg.f.size() * 4).ok());
      absl::Status s = run.launch(*sample);
      ASSERT_TRUE(s.ok()) << s;
      std::vector<int32_t> got(S);
      ASSERT_TRUE(dev.download(got.data(), rt[RuntimeInput::kSampledIds], S * 4).ok());
      for (int64_t r = 0; r < S; ++r) {
        const std::string err =
            check_sample_row(lg.f.data() + r * vocab, vocab, rows[r], uniform[r], got[r]);
        EXPECT_EQ(err, "") << "sampling [" << l.plan.kernels[sample->kernel].key << "] vocab "
                           << vocab << " round " << round << " row " << r << " (temperature "
                           << rows[r].temperature << ", top_k " << rows[r].top_k << ", top_p "
                           << rows[r].top_p << ", uniform " << uniform[r] << "): " << err;
      }
    }
  }
}

// Resolves every buffer to a distinct fake address (binding checks kinds, types and symbols).
class FakeResolver : public LaunchResolver {
 public:
  absl::StatusOr<uint64_t> tensor(const std::string&) override { return next_ += 256; }
  absl::StatusOr<uint64_t> workspace(const std::string&) override { return next_ += 256; }
  absl::StatusOr<uint64_t> runtime(RuntimeInput) override { return next_ += 256; }

 private:
  uint64_t next_ = 1 << 20;
};

// Without a GPU: every case parses, lowers, runs on the reference backend, and (with NVRTC) every
// kernel compiles for sm_90a, so a harness mistake shows up before the GPU run.
TEST(KernelsGpuHarness, CasesLowerRunOnReferenceAndCompile) {
  std::vector<Case> all;
  for (auto sweep : {rmsnorm_sweep, rope_sweep, gather_sweep, elementwise_sweep, prefill_sweep,
                     pipelined_prefill_sweep, hopper_prefill_sweep, decode_sweep, prefill_fp8_sweep,
                     decode_fp8_sweep, rope_attention_fp8_sweep}) {
    for (Case& c : sweep()) all.push_back(std::move(c));
  }
  std::vector<KernelJob> jobs;
  std::map<std::string, bool> seen;
  for (const Case& c : all) {
    SCOPED_TRACE(c.name);
    Lowered l = lower_case(c);
    ASSERT_NE(l.graph, nullptr);
    int launches = 0;
    for (const PlanLaunch& k : l.plan.launches) {
      if (!launch_runs_in(k.rule.when, c.prefill)) continue;
      ++launches;
      const PlanKernel& kernel = l.plan.kernels[k.kernel];
      // The plan's binding resolves every argument against the case (addresses are dummies).
      FakeResolver resolver;
      absl::StatusOr<std::vector<BoundArg>> bound = bind_launch(kernel, k, c.symbols, resolver);
      EXPECT_TRUE(bound.ok()) << bound.status();
      absl::StatusOr<LaunchGeometry> geometry = eval_launch_rule(k.rule, c.symbols);
      EXPECT_TRUE(geometry.ok()) << kernel.key << ": " << geometry.status();
      if (seen.emplace(kernel.key, true).second) {
        absl::StatusOr<std::string> src = emit_kernel_source(*l.plan.specs[k.kernel]);
        ASSERT_TRUE(src.ok()) << src.status();
        jobs.push_back({kernel.key, *src});
      }
    }
    EXPECT_GT(launches, 0);
    std::map<std::string, std::vector<float>> caches;
    InputBindings in;
    for (const auto& [name, t] : c.inputs) in.tensors.emplace(name, t);
    for (const auto& [name, t] : c.caches) {
      caches[name] = t.f;
      in.caches[name] = KvCacheView{caches[name].data(), t.shape};
    }
    in.symbols.values = c.symbols;
    absl::StatusOr<std::unique_ptr<ReferenceExecutor>> ex =
        ReferenceExecutor::create(*l.graph, {}, 2);
    ASSERT_TRUE(ex.ok()) << ex.status();
    absl::StatusOr<std::vector<HostTensor>> ref = (*ex)->run(in);
    ASSERT_TRUE(ref.ok()) << ref.status();
    ASSERT_EQ(ref->size(), c.tol.size());
  }
  if (!nvrtc_available()) GTEST_SKIP() << "built without NVRTC: kernels not compiled";
  KernelCache cache(std::string(KILN_BUILD_DIR) + "/gpu-kernel-cache");
  BuildStats stats;
  absl::StatusOr<std::vector<CompiledKernel>> built =
      build_kernels(jobs, "sm_90a", &cache, 0, &stats);
  ASSERT_TRUE(built.ok()) << built.status();
  std::printf("[ kiln gpu ] %zu kernels: %d compiled, %d cache hits, %.1f s\n", jobs.size(),
              stats.compiled, stats.hits, stats.seconds);
}

// Without a GPU: the fp8 conversion test kernel compiles for sm_80 (software encoder) and
// sm_90a (the PTX cvt), so the GPU run does not find a mistake in it first.
TEST(KernelsGpuHarness, Fp8ConversionKernelCompiles) {
  if (!nvrtc_available()) GTEST_SKIP() << "built without NVRTC: kernels not compiled";
  for (const char* arch : {"sm_80", "sm_90a"}) {
    absl::StatusOr<std::vector<CompiledKernel>> built =
        build_kernels({{"fp8_conversions", fp8_conversions_source()}}, arch, nullptr, 1);
    ASSERT_TRUE(built.ok()) << arch << ": " << built.status();
    EXPECT_EQ((*built)[0].ptx.find("cvt.rn.satfinite.e4m3x2.f32") != std::string::npos,
              std::string(arch) != "sm_80")
        << arch;
  }
}

// Without a GPU: the pipelined prefill kernels the sweep uses compile for both targets the plan
// may choose them on (sm_80 and sm_90a) with no stack frame and no spills: a spill would put the
// accumulators in local memory, the slow path this kernel exists to leave.
TEST(KernelsGpuHarness, PipelinedPrefillCompilesWithoutSpills) {
  if (!nvrtc_available()) GTEST_SKIP() << "built without NVRTC: kernels not compiled";
  std::vector<KernelJob> jobs;
  std::map<std::string, bool> seen;
  for (const Case& c : pipelined_prefill_sweep()) {
    Lowered l = lower_case(c);
    ASSERT_NE(l.graph, nullptr) << c.name;
    int pipelined = 0;
    for (const auto& spec : l.plan.specs) {
      if (spec->family() != KernelFamily::kFlashAttentionPrefill) continue;
      // The attribute must select the pipelined kernel, not silently fall back.
      EXPECT_NE(spec->key().find("_pipe"), std::string::npos) << c.name << ": " << spec->key();
      ++pipelined;
      if (!seen.emplace(spec->key(), true).second) continue;
      absl::StatusOr<std::string> src = emit_kernel_source(*spec);
      ASSERT_TRUE(src.ok()) << src.status();
      jobs.push_back({spec->key(), *src});
    }
    EXPECT_EQ(pipelined, 1) << c.name;
  }
  KernelCache cache(std::string(KILN_BUILD_DIR) + "/gpu-kernel-cache");
  for (const char* arch : {"sm_80", "sm_90a"}) {
    BuildStats stats;
    absl::StatusOr<std::vector<CompiledKernel>> built =
        build_kernels(jobs, arch, &cache, 0, &stats);
    ASSERT_TRUE(built.ok()) << arch << ": " << built.status();
    for (const CompiledKernel& k : *built) {
      std::printf("[ kiln gpu ] %s %s: %d registers, %d B static smem, %d B stack, %d B spills\n",
                  arch, k.name.c_str(), k.registers, k.shared_bytes, k.stack_bytes,
                  k.spill_bytes);
      EXPECT_EQ(k.stack_bytes, 0) << arch << " " << k.name << "\n" << k.log;
      EXPECT_EQ(k.spill_bytes, 0) << arch << " " << k.name << "\n" << k.log;
    }
  }
}

// Without a GPU: the hopper prefill kernels the sweep uses compile for sm_90a with no stack frame
// and no spills, and their PTX holds what makes them Hopper kernels (warpgroup MMAs, the register
// hand-over between producer and consumers, mbarrier waits); the same source built for sm_80 is a
// trap (no wgmma there), which the plan never selects.
TEST(KernelsGpuHarness, HopperPrefillCompilesWithWgmmaWithoutSpills) {
  if (!nvrtc_available()) GTEST_SKIP() << "built without NVRTC: kernels not compiled";
  std::vector<KernelJob> jobs;
  std::map<std::string, bool> seen;
  for (const Case& c : hopper_prefill_sweep()) {
    Lowered l = lower_case(c);
    ASSERT_NE(l.graph, nullptr) << c.name;
    int hopper = 0;
    for (const auto& spec : l.plan.specs) {
      if (spec->family() != KernelFamily::kFlashAttentionPrefill) continue;
      EXPECT_NE(spec->key().find("_hopper"), std::string::npos) << c.name << ": " << spec->key();
      ++hopper;
      if (!seen.emplace(spec->key(), true).second) continue;
      absl::StatusOr<std::string> src = emit_kernel_source(*spec);
      ASSERT_TRUE(src.ok()) << src.status();
      jobs.push_back({spec->key(), *src});
    }
    EXPECT_EQ(hopper, 1) << c.name;
  }
  KernelCache cache(std::string(KILN_BUILD_DIR) + "/gpu-kernel-cache");
  BuildStats stats;
  absl::StatusOr<std::vector<CompiledKernel>> built =
      build_kernels(jobs, "sm_90a", &cache, 0, &stats);
  ASSERT_TRUE(built.ok()) << built.status();
  for (const CompiledKernel& k : *built) {
    std::printf("[ kiln gpu ] sm_90a %s: %d registers, %d B static smem, %d B stack, %d B spills\n",
                k.name.c_str(), k.registers, k.shared_bytes, k.stack_bytes, k.spill_bytes);
    EXPECT_EQ(k.stack_bytes, 0) << k.name << "\n" << k.log;
    EXPECT_EQ(k.spill_bytes, 0) << k.name << "\n" << k.log;
    // The cap __launch_bounds__(384, 1) sets; setmaxnreg then moves registers between roles.
    EXPECT_LE(k.registers, 168) << k.name;
    for (const char* ptx : {"wgmma.mma_async.sync.aligned.m64n", "setmaxnreg.inc.sync.aligned",
                            "setmaxnreg.dec.sync.aligned", "mbarrier.try_wait.parity",
                            "cp.async.mbarrier.arrive.noinc"}) {
      EXPECT_NE(k.ptx.find(ptx), std::string::npos) << k.name << " lacks " << ptx;
    }
  }
  // sm_80 compiles the same source to a trap: no wgmma instruction reaches its PTX.
  absl::StatusOr<std::vector<CompiledKernel>> old =
      build_kernels({jobs.front()}, "sm_80", &cache, 1);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ((*old)[0].ptx.find("wgmma"), std::string::npos);
}

}  // namespace
}  // namespace kiln
