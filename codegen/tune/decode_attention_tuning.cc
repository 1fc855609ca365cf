// flash_attention decode tuning (see decode_attention_tuning.h).
#include "codegen/tune/decode_attention_tuning.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "codegen/families/flash_attention_decode.h"
#include "codegen/tune/device_data.h"
#include "ir/ops.h"
#include "plan/launch_expr.h"
#include "runtime/cuda/driver.h"

namespace kiln {
namespace {

// Decode steps timed per candidate: (sequences, context) of BENCH.md's decode cases.
constexpr std::pair<int, int> kSteps[] = {{1, 32768}, {16, 4096}, {64, 4096}};

struct AttnShape {
  DType dtype = DType::kBF16;
  int64_t hq = 0, hkv = 0, d = 0, page = 0;
  double scale = 1;
};

absl::StatusOr<AttnShape> node_shape(const Node& n) {
  const FlashAttentionOp op(n);
  AttnShape s;
  const Type& q = op.q()->type;
  const Type& cache = op.k_cache()->type;
  if (cache.dtype == DType::kFP8E4M3) {
    // Its trials would time bf16 caches: an fp8e4m3 cache keeps the default configuration.
    return absl::UnimplementedError("the decode tuner times 16-bit caches, not fp8e4m3");
  }
  s.dtype = q.dtype;
  for (auto [dim, out] : {std::pair{&q.shape[1], &s.hq}, {&q.shape[2], &s.d},
                          {&cache.shape[2], &s.hkv}, {&cache.shape[1], &s.page}}) {
    absl::StatusOr<int64_t> v = const_dim(*dim, "flash_attention dim");
    if (!v.ok()) return v.status();
    *out = *v;
  }
  absl::StatusOr<double> scale = n.attrs.get_float("scale");
  if (!scale.ok()) return scale.status();
  s.scale = *scale;
  if (s.hkv <= 0 || s.hq % s.hkv != 0) return absl::InvalidArgumentError("bad head counts");
  return s;
}

Candidate make_candidate(const DecodeConfig& c) {
  Candidate out;
  set_decode_attrs(c, out.attrs);
  out.label = absl::StrCat("kv", c.tile_kv, " w", c.warps, " st", c.stages, " ",
                           decode_softmax_name(c.softmax), " blocks",
                           c.split_blocks > 0 ? c.split_blocks : kDecodeTargetBlocks);
  return out;
}

}  // namespace

struct DecodeAttentionTuning::Buffers {
  DeviceBuffer q, k, v, out, o_partial, lse, counters, positions, qo, indptr, indices, last;
};

DecodeAttentionTuning::DecodeAttentionTuning() = default;
DecodeAttentionTuning::~DecodeAttentionTuning() = default;

bool DecodeAttentionTuning::applies(const Node& node) const {
  return node.op == OpKind::kFlashAttention && node_shape(node).ok();
}

std::string DecodeAttentionTuning::key(const Node& node) const {
  absl::StatusOr<AttnShape> s = node_shape(node);
  if (!s.ok()) return "flash_attention_decode_invalid";
  return absl::StrCat("flash_attention_decode_", dtype_name(s->dtype), "_hq", s->hq, "_hkv", s->hkv,
                      "_d", s->d, "_page", s->page);
}

absl::StatusOr<std::vector<Candidate>> DecodeAttentionTuning::candidates(const Node& node) const {
  absl::StatusOr<AttnShape> s = node_shape(node);
  if (!s.ok()) return s.status();
  std::vector<Candidate> out = {make_candidate(DecodeConfig{})};
  const std::tuple<int, int, int> layouts[] = {{16, 4, 2}, {16, 4, 3}, {16, 4, 4}, {16, 8, 2},
                                               {32, 4, 2}, {32, 4, 3}, {16, 4, 1}};
  for (auto [tile, warps, stages] : layouts) {
    for (DecodeSoftmax sm : {DecodeSoftmax::kLse, DecodeSoftmax::kUnifiedMax}) {
      for (int64_t blocks : {264, 528, 1056}) {
        DecodeConfig c;
        c.tile_kv = tile, c.warps = warps, c.stages = stages, c.softmax = sm;
        c.split_blocks = blocks;
        Attributes a;
        set_decode_attrs(c, a);
        if (!decode_config(a, s->d).ok()) continue;  // e.g. too much shared memory
        Candidate cand = make_candidate(c);
        if (cand.attrs == out[0].attrs) continue;
        out.push_back(std::move(cand));
      }
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::shared_ptr<const KernelSpec>>> DecodeAttentionTuning::specs(
    const Node& node, const Candidate& c) const {
  absl::StatusOr<AttnShape> s = node_shape(node);
  if (!s.ok()) return s.status();
  absl::StatusOr<DecodeConfig> dc = decode_config(c.attrs, s->d);
  if (!dc.ok()) return dc.status();
  return std::vector<std::shared_ptr<const KernelSpec>>{
      make_decode_spec(s->dtype, KvCacheKind::kSameAsRows, s->d, s->hq / s->hkv, *dc)};
}

double DecodeAttentionTuning::tolerance(const Node& node) const {
  absl::StatusOr<AttnShape> s = node_shape(node);
  // Two fp32 paths rounded once to the output type: a few of its units apart at most.
  return s.ok() && s->dtype == DType::kF16 ? 4e-3 : 2e-2;
}

absl::StatusOr<Trial> DecodeAttentionTuning::run(const Node& node, const Candidate& c,
                                                 TuneDevice& device) const {
  GpuDevice* gpu = device.gpu();
  if (gpu == nullptr) return absl::FailedPreconditionError("decode tuning needs a GPU");
  absl::StatusOr<AttnShape> s = node_shape(node);
  if (!s.ok()) return s.status();
  absl::StatusOr<DecodeConfig> dc = decode_config(c.attrs, s->d);
  if (!dc.ok()) return dc.status();
  const std::shared_ptr<FlashAttentionDecodeSpec> spec =
      make_decode_spec(s->dtype, KvCacheKind::kSameAsRows, s->d, s->hq / s->hkv, *dc);
  absl::StatusOr<const GpuKernel*> kd = device.kernel(spec->key());
  if (!kd.ok()) return kd.status();
  const bool fixed = dc->split_kv > 0;
  const int64_t max_split = fixed ? dc->split_kv : kMaxSplitKv;
  const std::string split_expr = decode_split_expr(
      max_split, fixed, s->hkv, dc->split_blocks > 0 ? dc->split_blocks : kDecodeTargetBlocks);

  Trial trial;
  for (auto [S, K] : kSteps) {
    const std::string wkey = absl::StrCat(key(node), "_S", S, "_K", K);
    auto it = buffers_.find(wkey);
    if (it == buffers_.end()) {
      auto nb = std::make_unique<Buffers>();
      const int64_t pages_per_seq = (K + s->page - 1) / s->page;
      const int64_t pages = S * pages_per_seq;
      const size_t cache_bytes = static_cast<size_t>(pages * s->page * s->hkv * s->d * 2);
      std::mt19937 rng(static_cast<uint32_t>(S * 7919 + K));
      std::vector<int32_t> perm(pages);
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      std::vector<int32_t> indptr(S + 1), last(S, static_cast<int32_t>(K - (pages_per_seq - 1) * s->page)),
          qo(S + 1), positions(S, K - 1);
      for (int i = 0; i <= S; ++i) indptr[i] = static_cast<int32_t>(i * pages_per_seq), qo[i] = i;
      auto put = [&](absl::StatusOr<DeviceBuffer> r, DeviceBuffer& dst) -> absl::Status {
        if (!r.ok()) return r.status();
        dst = std::move(*r);
        return absl::OkStatus();
      };
      const size_t q_bytes = static_cast<size_t>(S * s->hq * s->d * 2);
      for (absl::Status st : {
               put(tune::random_buffer(*gpu, s->dtype, q_bytes, 1 + S), nb->q),
               put(tune::random_buffer(*gpu, s->dtype, cache_bytes, 2), nb->k),
               put(tune::random_buffer(*gpu, s->dtype, cache_bytes, 3), nb->v),
               put(gpu->alloc(q_bytes), nb->out),
               put(gpu->alloc(static_cast<size_t>(256 * S * s->hq * s->d * 4)), nb->o_partial),
               put(gpu->alloc(static_cast<size_t>(2 * 256 * S * s->hq * 4)), nb->lse),
               put(gpu->alloc(static_cast<size_t>(S * s->hkv * 4)), nb->counters),
               put(tune::upload_ints(*gpu, positions), nb->positions),
               put(tune::upload_ints(*gpu, qo), nb->qo),
               put(tune::upload_ints(*gpu, indptr), nb->indptr),
               put(tune::upload_ints(*gpu, perm), nb->indices),
               put(tune::upload_ints(*gpu, last), nb->last)}) {
        if (!st.ok()) return st;
      }
      // The split counters start zeroed, as the runtime's zeroed workspace does; every launch
      // leaves them zeroed.
      if (absl::Status st = gpu->fill_bytes(nb->counters.ptr(), 0, nb->counters.bytes()); !st.ok()) {
        return st;
      }
      it = buffers_.emplace(wkey, std::move(nb)).first;
    }
    const Buffers* b = it->second.get();
    absl::StatusOr<int64_t> splits = eval_launch_expr(split_expr, {{"S", S}, {"K", K}});
    if (!splits.ok()) return splits.status();
    LaunchDims dd;
    dd.grid[0] = S, dd.grid[1] = static_cast<unsigned>(s->hkv), dd.grid[2] = static_cast<unsigned>(*splits);
    dd.block[0] = static_cast<unsigned>(32 * dc->warps);
    dd.dynamic_smem = static_cast<size_t>(spec->shared_bytes());
    auto step = [&]() -> absl::Status {
      KernelArgs a;
      a.ptr(b->out.ptr()).ptr(b->o_partial.ptr()).ptr(b->lse.ptr()).ptr(b->counters.ptr());
      a.ptr(b->q.ptr()).ptr(b->k.ptr()).ptr(b->v.ptr());
      a.ptr(b->positions.ptr()).ptr(b->qo.ptr()).ptr(b->indptr.ptr()).ptr(b->indices.ptr());
      a.ptr(b->last.ptr()).i32(S).i32(static_cast<int32_t>(s->hkv)).i32(static_cast<int32_t>(s->page));
      a.f32(static_cast<float>(s->scale)).f32(static_cast<float>(dc->softmax_bound));
      return gpu->launch(**kd, dd, a);
    };
    // Poison the output first: a candidate that skips rows fails the check.
    if (absl::Status st = gpu->fill_bytes(b->out.ptr(), 0xFF, b->out.bytes()); !st.ok()) return st;
    if (absl::Status st = step(); !st.ok()) return st;
    if (absl::Status st = gpu->synchronize(); !st.ok()) return st;
    absl::StatusOr<std::vector<float>> out =
        tune::download_halves(*gpu, b->out.ptr(), s->dtype, b->out.bytes() / 2);
    if (!out.ok()) return out.status();
    trial.output.insert(trial.output.end(), out->begin(), out->end());
    absl::StatusOr<double> us = tune::time_us(*gpu, step);
    if (!us.ok()) return us.status();
    trial.us += *us;
  }
  return trial;
}

}  // namespace kiln
