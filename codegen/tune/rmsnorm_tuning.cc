// rmsnorm layout tuning (see rmsnorm_tuning.h).
#include "codegen/tune/rmsnorm_tuning.h"

#include "absl/strings/str_cat.h"
#include "codegen/families/rmsnorm_residual.h"
#include "codegen/tune/device_data.h"
#include "runtime/cuda/driver.h"

namespace kiln {
namespace {

constexpr int64_t kRows[] = {1, 64, 16384};

struct NormShape {
  DType dtype = DType::kBF16;
  bool residual = false;
  int64_t h = 0;
  double eps = 1e-6;
};

absl::StatusOr<NormShape> node_shape(const Node& n) {
  if (n.op != OpKind::kRmsNorm && n.op != OpKind::kRmsNormResidual) {
    return absl::InvalidArgumentError("not an rmsnorm");
  }
  NormShape s;
  s.residual = n.op == OpKind::kRmsNormResidual;
  const Type& x = n.inputs[0]->type;
  s.dtype = x.dtype;
  if (s.dtype != DType::kBF16 && s.dtype != DType::kF16) {
    return absl::InvalidArgumentError("rmsnorm tuning times bf16/f16 rows");
  }
  absl::StatusOr<int64_t> h = const_dim(x.shape.back(), "hidden size");
  if (!h.ok()) return h.status();
  s.h = *h;
  absl::StatusOr<double> eps = n.attrs.get_float("eps");
  if (!eps.ok()) return eps.status();
  s.eps = *eps;
  return s;
}

absl::StatusOr<std::shared_ptr<RmsNormSpec>> make_spec(const NormShape& s, const Attributes& a) {
  auto spec = std::make_shared<RmsNormSpec>();
  spec->dtype = s.dtype;
  spec->residual = s.residual;
  spec->hidden = s.h;
  if (absl::Status st = rmsnorm_layout(a, s.h, s.dtype, &spec->row, &spec->rows); !st.ok()) {
    return st;
  }
  return spec;
}

}  // namespace

struct RmsNormTuning::Buffers {
  DeviceBuffer x, res, w, y, sum;
};

RmsNormTuning::RmsNormTuning() = default;
RmsNormTuning::~RmsNormTuning() = default;

bool RmsNormTuning::applies(const Node& node) const { return node_shape(node).ok(); }

std::string RmsNormTuning::key(const Node& node) const {
  absl::StatusOr<NormShape> s = node_shape(node);
  if (!s.ok()) return "rmsnorm_invalid";
  return absl::StrCat(s->residual ? "rmsnorm_residual_" : "rmsnorm_", dtype_name(s->dtype), "_h",
                      s->h);
}

absl::StatusOr<std::vector<Candidate>> RmsNormTuning::candidates(const Node& node) const {
  absl::StatusOr<NormShape> s = node_shape(node);
  if (!s.ok()) return s.status();
  std::vector<Candidate> out(1);  // [0]: row_vectors' default (no attributes)
  const RowVectors def = row_vectors(s->h, s->dtype);
  out[0].label = absl::StrCat("t", def.threads, " r1 (default)");
  out[0].attrs.set("norm_threads", def.threads);
  out[0].attrs.set("norm_rows", int64_t{1});
  const int64_t vecs = s->h / def.vec;
  for (int64_t t : {32, 64, 96, 128, 256, 512, 1024}) {
    if (t > (vecs + 31) / 32 * 32 || (vecs + t - 1) / t > 16) continue;
    for (int64_t r : {1, 2, 4, 8}) {
      if (t * r > 1024 || (t == def.threads && r == 1)) continue;
      Candidate c;
      c.label = absl::StrCat("t", t, " r", r);
      c.attrs.set("norm_threads", t);
      c.attrs.set("norm_rows", r);
      if (make_spec(*s, c.attrs).ok()) out.push_back(std::move(c));
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::shared_ptr<const KernelSpec>>> RmsNormTuning::specs(
    const Node& node, const Candidate& c) const {
  absl::StatusOr<NormShape> s = node_shape(node);
  if (!s.ok()) return s.status();
  absl::StatusOr<std::shared_ptr<RmsNormSpec>> spec = make_spec(*s, c.attrs);
  if (!spec.ok()) return spec.status();
  return std::vector<std::shared_ptr<const KernelSpec>>{*spec};
}

double RmsNormTuning::tolerance(const Node& node) const {
  // The same fp32 arithmetic in another order: one output unit apart at most.
  absl::StatusOr<NormShape> s = node_shape(node);
  return s.ok() && s->dtype == DType::kF16 ? 2e-3 : 1e-2;
}

absl::StatusOr<Trial> RmsNormTuning::run(const Node& node, const Candidate& c,
                                         TuneDevice& device) const {
  GpuDevice* gpu = device.gpu();
  if (gpu == nullptr) return absl::FailedPreconditionError("rmsnorm tuning needs a GPU");
  absl::StatusOr<NormShape> s = node_shape(node);
  if (!s.ok()) return s.status();
  absl::StatusOr<std::shared_ptr<RmsNormSpec>> spec = make_spec(*s, c.attrs);
  if (!spec.ok()) return spec.status();
  absl::StatusOr<const GpuKernel*> k = device.kernel((*spec)->key());
  if (!k.ok()) return k.status();
  const std::string bkey = key(node);
  auto it = buffers_.find(bkey);
  const size_t max_bytes = static_cast<size_t>(kRows[2] * s->h * 2);
  if (it == buffers_.end()) {
    auto b = std::make_unique<Buffers>();
    auto put = [&](absl::StatusOr<DeviceBuffer> r, DeviceBuffer& dst) -> absl::Status {
      if (!r.ok()) return r.status();
      dst = std::move(*r);
      return absl::OkStatus();
    };
    for (absl::Status st : {put(tune::random_buffer(*gpu, s->dtype, max_bytes, 11), b->x),
                            put(tune::random_buffer(*gpu, s->dtype, max_bytes, 12), b->res),
                            put(tune::random_buffer(*gpu, s->dtype, static_cast<size_t>(s->h * 2), 13), b->w),
                            put(gpu->alloc(max_bytes), b->y), put(gpu->alloc(max_bytes), b->sum)}) {
      if (!st.ok()) return st;
    }
    it = buffers_.emplace(bkey, std::move(b)).first;
  }
  const Buffers* b = it->second.get();
  Trial trial;
  for (int64_t rows : kRows) {
    LaunchDims dims;
    dims.grid[0] = static_cast<unsigned>((rows + (*spec)->rows - 1) / (*spec)->rows);
    dims.block[0] = static_cast<unsigned>((*spec)->row.threads * (*spec)->rows);
    auto step = [&]() -> absl::Status {
      KernelArgs a;
      if (s->residual) {
        a.ptr(b->y.ptr()).ptr(b->sum.ptr()).ptr(b->x.ptr()).ptr(b->res.ptr()).ptr(b->w.ptr());
      } else {
        a.ptr(b->y.ptr()).ptr(b->x.ptr()).ptr(b->w.ptr());
      }
      a.f32(static_cast<float>(s->eps)).i32(static_cast<int32_t>(rows));
      return gpu->launch(**k, dims, a);
    };
    const size_t bytes = static_cast<size_t>(rows * s->h * 2);
    if (absl::Status st = gpu->fill_bytes(b->y.ptr(), 0xFF, bytes); !st.ok()) return st;
    if (absl::Status st = step(); !st.ok()) return st;
    if (absl::Status st = gpu->synchronize(); !st.ok()) return st;
    // The numeric check reads the first 64 rows (all of them for the decode sizes).
    absl::StatusOr<std::vector<float>> out = tune::download_halves(
        *gpu, b->y.ptr(), s->dtype, static_cast<size_t>(std::min<int64_t>(rows, 64) * s->h));
    if (!out.ok()) return out.status();
    trial.output.insert(trial.output.end(), out->begin(), out->end());
    absl::StatusOr<double> us = tune::time_us(*gpu, step);
    if (!us.ok()) return us.status();
    trial.us += *us;
  }
  return trial;
}

}  // namespace kiln
