// ReferenceBackend: plan IR + referenced weights -> ReferenceExecutor, host KV storage, sampling.
#include "runtime/reference/reference_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "ir/parser.h"
#include "models/weights.h"
#include "plan/weight_parts.h"
#include "xxhash.h"

namespace kiln {

/// A zero-filled host array from calloc: large pools cost nothing until a page is written (the
/// kernel hands out zero pages lazily), so the KV pool can be sized for the full context.
struct ReferenceBackend::HostArray {
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> data;
};

namespace {

// How a user rebuilds a plan whose weights are gone or changed.
std::string recompile_hint(const Plan& plan) {
  return absl::StrCat("restore the file, or recompile the plan from the current checkpoint: kiln ",
                      "compile ", plan.model_path.empty() ? "<model>" : plan.model_path,
                      " -o <plan>.kplan");
}

// Bytes `shape` takes in `dtype` (block types pack block_elements values per block).
int64_t stored_bytes(DType dtype, const std::vector<int64_t>& shape) {
  return num_elements(shape) / block_elements(dtype) * block_bytes(dtype);
}

}  // namespace

ReferenceBackend::~ReferenceBackend() = default;

absl::StatusOr<std::unique_ptr<ReferenceBackend>> ReferenceBackend::create(
    const Plan& plan, const BackendOptions& options, const PlanBlobReader& blobs) {
  std::unique_ptr<ReferenceBackend> b(new ReferenceBackend());
  b->plan_ = plan;
  absl::StatusOr<std::unique_ptr<Graph>> graph = parse_graph(plan.ir);
  if (!graph.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the plan's IR does not parse (", graph.status().message(), "); ", recompile_hint(plan)));
  }
  if ((*graph)->ranks() != std::max(1, plan.ranks)) {
    return absl::InvalidArgumentError(absl::StrCat("the plan declares ", plan.ranks,
                                                   " tensor-parallel ranks but its IR runs on ",
                                                   (*graph)->ranks(), "; ", recompile_hint(plan)));
  }
  if (absl::Status s = b->load_weights(**graph, options, blobs); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<ReferenceExecutor>> exec = ReferenceExecutor::create_ranks(
      **graph, b->params_, options.num_threads, options.quantize_activations);
  if (!exec.ok()) return exec.status();
  b->executor_ = std::move(*exec);
  if (absl::Status s = b->allocate_kv(options); !s.ok()) return s;
  return b;
}

absl::StatusOr<std::unique_ptr<ReferenceBackend>> ReferenceBackend::create(
    const LoadedPlan& plan, const BackendOptions& options) {
  return create(plan.plan, options, [&plan](int index) -> absl::StatusOr<std::string_view> {
    return plan.blob(index);
  });
}

absl::Status ReferenceBackend::load_weights(const Graph& graph, const BackendOptions& options,
                                            const PlanBlobReader& blobs) {
  absl::flat_hash_map<std::string, const MappedFile*> opened;
  // The bytes of a weight stored in the checkpoint or the plan file.
  auto stored = [&](const PlanWeight& w) -> absl::StatusOr<absl::Span<const uint8_t>> {
    const uint64_t want_size = static_cast<uint64_t>(stored_bytes(w.dtype, w.shape));
    absl::Span<const uint8_t> bytes;
    if (w.packed()) {
      if (!blobs) {
        return absl::InvalidArgumentError(absl::StrCat(
            "plan weight '", w.name, "' is packed in the plan file, but no plan file was given"));
      }
      absl::StatusOr<std::string_view> blob = blobs(w.blob);
      if (!blob.ok()) return blob.status();
      bytes = {reinterpret_cast<const uint8_t*>(blob->data()), blob->size()};
      if (bytes.size() != want_size) {
        return absl::InvalidArgumentError(
            absl::StrCat("plan weight '", w.name, "' has ", bytes.size(), " bytes packed, its ",
                         dtype_name(w.dtype), " shape needs ", want_size));
      }
    } else {
      auto f = opened.find(w.file);
      if (f == opened.end()) {
        absl::StatusOr<std::unique_ptr<MappedFile>> m = MappedFile::open(w.file);
        if (!m.ok()) {
          return absl::FailedPreconditionError(
              absl::StrCat("the plan's weights live in ", w.file, ", which cannot be read (",
                           m.status().message(), "); ", recompile_hint(plan_)));
        }
        files_.push_back(std::move(*m));
        f = opened.emplace(w.file, files_.back().get()).first;
      }
      const MappedFile& file = *f->second;
      if (w.size != want_size || w.offset > file.size() || w.size > file.size() - w.offset) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "%s has changed since the plan was compiled: weight '%s' (%s) should be %d bytes at "
            "offset %d, the file has %d bytes; %s",
            w.file, w.name, w.source_name, w.size, w.offset, file.size(), recompile_hint(plan_)));
      }
      bytes = file.bytes().subspan(w.offset, w.size);
      if (options.verify_weights && XXH3_64bits(bytes.data(), bytes.size()) != w.xxh3) {
        return absl::FailedPreconditionError(
            absl::StrCat(w.file,
                         " has changed since the plan was compiled: the checksum of "
                         "weight '",
                         w.name, "' (", w.source_name, ") differs; ", recompile_hint(plan_)));
      }
    }
    return bytes;
  };
  // One param's weight as the executor reads it: stored bytes mapped, or assembled and/or
  // converted into converted_.
  auto load_param = [&](const Value* p, const PlanWeight& w) -> absl::StatusOr<ParamView> {
    std::vector<int64_t> shape;
    for (const Dim& d : p->type.shape) shape.push_back(d.value);
    if (w.shape != shape) {
      return absl::InvalidArgumentError(
          absl::StrCat("plan weight '", w.name, "' has shape [", absl::StrJoin(w.shape, ","),
                       "] but the IR param needs [", absl::StrJoin(shape, ","), "]"));
    }
    absl::Span<const uint8_t> bytes;
    if (w.derived()) {
      // Assembled from row (or column) ranges of stored weights (plan/weight_parts.h); column
      // parts give one range per row, so each source's bytes are looked up (and checked) once.
      absl::StatusOr<std::vector<WeightByteRange>> ranges = weight_byte_ranges(plan_, w);
      if (!ranges.ok()) return ranges.status();
      std::vector<uint8_t>& buf = converted_.emplace_back();
      absl::flat_hash_map<const PlanWeight*, absl::Span<const uint8_t>> sources;
      for (const WeightByteRange& r : *ranges) {
        auto it = sources.find(r.source);
        if (it == sources.end()) {
          absl::StatusOr<absl::Span<const uint8_t>> src = stored(*r.source);
          if (!src.ok()) return src.status();
          it = sources.emplace(r.source, *src).first;
        }
        buf.insert(buf.end(), it->second.begin() + r.offset,
                   it->second.begin() + r.offset + r.size);
      }
      bytes = buf;
    } else {
      absl::StatusOr<absl::Span<const uint8_t>> own = stored(w);
      if (!own.ok()) return own.status();
      bytes = *own;
    }

    // Map the stored bytes when they already have the param's dtype, convert otherwise.
    const DType want = p->type.dtype;
    const int64_t n = num_elements(shape);
    ParamView view{want, shape, nullptr};
    if (w.dtype == want) {
      view.data = bytes.data();
    } else if (options.native_weights && is_quantized(w.dtype) && is_float(want)) {
      view.dtype = w.dtype;  // the executor's matmul and gather read the blocks in place
      view.data = bytes.data();
      weight_bytes_ += static_cast<int64_t>(bytes.size());
      return view;
    } else if (want == DType::kF32 || want == DType::kBF16) {
      Weight src{w.name, w.dtype, w.shape, bytes, w.file, w.offset, w.source_name};
      std::vector<uint8_t>& buf = converted_.emplace_back(n * block_bytes(want));
      absl::Status s =
          want == DType::kF32
              ? to_f32(src, absl::Span<float>(reinterpret_cast<float*>(buf.data()), n))
              : to_bf16(src, absl::Span<uint16_t>(reinterpret_cast<uint16_t*>(buf.data()), n));
      if (!s.ok()) return s;
      view.data = buf.data();
    } else {
      return absl::UnimplementedError(absl::StrCat(
          "the reference backend cannot convert weight '", w.name, "' from ", dtype_name(w.dtype),
          " to ", dtype_name(want), "; compile the plan with --dtype bf16 or f32"));
    }
    weight_bytes_ += n * block_bytes(want);
    return view;
  };
  // A weight every rank holds is loaded once, its view shared by the ranks.
  absl::flat_hash_map<const PlanWeight*, ParamView> loaded;
  params_.assign(graph.ranks(), ParamViews());
  for (int rank = 0; rank < graph.ranks(); ++rank) {
    for (const Value* p : graph.params()) {
      const PlanWeight* w = plan_.find_weight(p->name, rank);
      if (w == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("the plan's IR reads @", p->name, " but the plan lists no such weight",
                         graph.ranks() > 1 ? absl::StrCat(" for rank ", rank) : "", "; ",
                         recompile_hint(plan_)));
      }
      auto done = loaded.find(w);
      if (done == loaded.end()) {
        absl::StatusOr<ParamView> view = load_param(p, *w);
        if (!view.ok()) return view.status();
        done = loaded.emplace(w, *std::move(view)).first;
      }
      params_[rank].emplace(p->name, done->second);
    }
  }
  return absl::OkStatus();
}

int64_t ReferenceBackend::floats_per_page() const {
  return int64_t{plan_.kv.page_size} * plan_.kv.num_kv_heads * plan_.kv.head_dim;
}

absl::Status ReferenceBackend::allocate_kv(const BackendOptions& options) {
  const KvLayout& kv = plan_.kv;
  if (kv.page_size <= 0 || kv.num_layers <= 0 || kv.num_kv_heads <= 0 || kv.head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the plan's KV layout is empty (page size ", kv.page_size, ", ", kv.num_layers, " layers, ",
        kv.num_kv_heads, " KV heads, head dim ", kv.head_dim, "); ", recompile_hint(plan_)));
  }
  // The host storage is f32 whatever the plan's KV dtype (the executor computes in fp32; an
  // fp8e4m3 cache holds its codes' values, exact in f32), plus the f32 scales of an fp8e4m3 cache.
  const int64_t page_bytes = host_bytes_per_page();
  if (options.kv_pages > 0) {
    kv_pages_ = options.kv_pages;
  } else if (options.kv_cache_gb > 0) {
    kv_pages_ = static_cast<int64_t>(options.kv_cache_gb * (1 << 30)) / page_bytes;
  } else {
    // Every sequence of a step at the full context, within 4 GiB of (lazily zeroed) memory.
    const StepLimits& lim = plan_.limits;
    const int64_t context = lim.max_context > 0 ? std::min(lim.max_context, plan_.model.max_context)
                                                : plan_.model.max_context;
    const int64_t per_seq = (std::max<int64_t>(context, 1) + kv.page_size - 1) / kv.page_size;
    kv_pages_ =
        std::min(std::max<int64_t>(lim.max_seqs, 1) * per_seq, (int64_t{4} << 30) / page_bytes);
  }
  if (plan_.limits.max_pool_pages > 0) kv_pages_ = std::min(kv_pages_, plan_.limits.max_pool_pages);
  if (kv_pages_ <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the KV cache budget holds no page (one page takes ", page_bytes, " bytes); give more"));
  }
  if (kv_pages_ * kv.page_size > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kv_pages_, " KV pages of ", kv.page_size,
                     " tokens do not fit the int32 slot_mapping; use fewer pages"));
  }
  // Per layer and tensor-parallel rank: [rank * layers + layer].
  for (auto [arrays, per_page] :
       {std::pair{&k_, floats_per_page()}, std::pair{&v_, floats_per_page()},
        std::pair{&k_scales_, scales_per_page()}, std::pair{&v_scales_, scales_per_page()}}) {
    if (per_page == 0) continue;  // no scale arrays: not an fp8e4m3 cache
    const size_t floats = static_cast<size_t>(kv_pages_ * per_page);
    arrays->resize(static_cast<size_t>(kv.num_layers) * ranks());
    for (HostArray& a : *arrays) {
      a.data.reset(static_cast<float*>(std::calloc(floats, sizeof(float))));
      if (!a.data) {
        return absl::ResourceExhaustedError(
            absl::StrCat("cannot allocate ", kv_pages_, " KV pages (",
                         kv_pages_ * page_bytes * ranks(),
                         " bytes of host memory); ask for fewer with --kv-pages"));
      }
    }
  }
  return absl::OkStatus();
}

int64_t ReferenceBackend::scales_per_page() const {
  return plan_.kv.has_scales() ? int64_t{plan_.kv.page_size} * plan_.kv.num_kv_heads : 0;
}

int64_t ReferenceBackend::host_bytes_per_page() const {
  return 2 * int64_t{plan_.kv.num_layers} * (floats_per_page() + scales_per_page()) * 4;
}

namespace {
// Layer `layer` of rank `rank` among per-(rank, layer) arrays; null out of range or absent.
template <class Arrays>
float* layer_of(Arrays& arrays, int32_t layers, int32_t layer, int rank) {
  const size_t at = static_cast<size_t>(rank) * layers + layer;
  if (layer < 0 || layer >= layers || rank < 0 || at >= arrays.size()) return nullptr;
  return arrays[at].data.get();
}
}  // namespace

float* ReferenceBackend::k_data(int32_t layer, int rank) {
  return layer_of(k_, plan_.kv.num_layers, layer, rank);
}
float* ReferenceBackend::v_data(int32_t layer, int rank) {
  return layer_of(v_, plan_.kv.num_layers, layer, rank);
}
float* ReferenceBackend::k_scales(int32_t layer, int rank) {
  return layer_of(k_scales_, plan_.kv.num_layers, layer, rank);
}
float* ReferenceBackend::v_scales(int32_t layer, int rank) {
  return layer_of(v_scales_, plan_.kv.num_layers, layer, rank);
}

std::string ReferenceBackend::load_report() const {
  const KvLayout& kv = plan_.kv;
  const int64_t kv_bytes = kv_pages_ * host_bytes_per_page();
  // The plan's KV dtype is what a GPU pool of this size holds; the host keeps f32 (fp8e4m3
  // emulated: codes rounded exactly as the GPU stores them, scales beside them).
  std::string out = absl::StrFormat(
      "cpu reference backend: %d weights (%.1f MiB), KV pool %d pages of %d tokens (%d tokens, "
      "%s KV%s held as %.1f MiB f32, allocated as written; %.1f MiB in %s), %d threads",
      params_[0].size(), weight_bytes_ / 1048576.0, kv_pages_, kv.page_size,
      kv_pages_ * kv.page_size, dtype_name(kv.dtype),
      kv.has_scales() ? " with per-(slot, KV head) scales," : "", kv_bytes / 1048576.0,
      kv_pages_ * kv.bytes_per_page() / 1048576.0, dtype_name(kv.dtype), executor_->num_threads());
  if (ranks() > 1) {
    absl::StrAppend(&out, "; ", ranks(),
                    " tensor-parallel ranks in this process (weights over "
                    "all ranks, KV pool per rank)");
  }
  return out;
}

absl::Status ReferenceBackend::copy_kv_pages(absl::Span<const PageCopy> copies) {
  for (const PageCopy& c : copies) {
    if (c.src < 0 || c.src >= kv_pages_ || c.dst < 0 || c.dst >= kv_pages_) {
      return absl::InvalidArgumentError(absl::StrCat("KV page copy ", c.src, " -> ", c.dst,
                                                     " is outside the pool of ", kv_pages_));
    }
  }
  // A page's scales (fp8e4m3) are copied with its codes: the copy of a shared partly filled page
  // must dequantize exactly as the original.
  for (const PageCopy& c : copies) {
    for (auto [arrays, n] :
         {std::pair{&k_, floats_per_page()}, std::pair{&v_, floats_per_page()},
          std::pair{&k_scales_, scales_per_page()}, std::pair{&v_scales_, scales_per_page()}}) {
      for (HostArray& a : *arrays) {
        std::memcpy(a.data.get() + c.dst * n, a.data.get() + c.src * n, n * sizeof(float));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<StepResult> ReferenceBackend::run_step(const StepRequest& step) {
  const StepInputs& in = step.inputs;
  const StepMetadata& m = in.metadata;
  if (static_cast<int32_t>(step.sampling.size()) != in.num_sequences()) {
    return absl::InvalidArgumentError(absl::StrCat("the step has ", in.num_sequences(),
                                                   " sequences but ", step.sampling.size(),
                                                   " sampling settings"));
  }
  // The step graph's inputs (models/llama_graph.h's build_llama contract), read in place.
  InputBindings b;
  auto ints = [](const std::vector<int32_t>& v) {
    return HostTensor::ints({static_cast<int64_t>(v.size())}, v);
  };
  b.tensors["tokens"] = ints(in.tokens);
  b.tensors["positions"] = ints(m.positions);
  b.tensors["slot_mapping"] = ints(m.slot_mapping);
  b.tensors["qo_indptr"] = ints(m.qo_indptr);
  b.tensors["kv_page_indptr"] = ints(m.kv_page_indptr);
  b.tensors["kv_page_indices"] = ints(m.kv_page_indices);
  b.tensors["kv_last_page_len"] = ints(m.kv_last_page_len);
  b.symbols.set("K", m.max_kv_len);
  if (in.cascade) {
    if (absl::Status s = check_cascade_layout(*in.cascade, m, plan_.kv.page_size); !s.ok()) {
      return s;
    }
    b.cascade = &*in.cascade;
  }
  // Each rank reads the same step and its own KV cache.
  const KvLayout& kv = plan_.kv;
  const std::vector<int64_t> cache_shape = {kv_pages_, kv.page_size, kv.num_kv_heads, kv.head_dim};
  const std::vector<int64_t> scale_shape = {kv_pages_, kv.page_size, kv.num_kv_heads};
  std::vector<InputBindings> ranks(this->ranks(), b);
  for (int r = 0; r < this->ranks(); ++r) {
    for (int32_t l = 0; l < kv.num_layers; ++l) {
      ranks[r].caches[absl::StrCat("k_cache.", l)] = KvCacheView{k_data(l, r), cache_shape};
      ranks[r].caches[absl::StrCat("v_cache.", l)] = KvCacheView{v_data(l, r), cache_shape};
      if (kv.has_scales()) {  // the graph's k_scales.<l> / v_scales.<l> (models/llama_graph.h)
        ranks[r].caches[absl::StrCat("k_scales.", l)] = KvCacheView{k_scales(l, r), scale_shape};
        ranks[r].caches[absl::StrCat("v_scales.", l)] = KvCacheView{v_scales(l, r), scale_shape};
      }
    }
  }
  absl::StatusOr<std::vector<HostTensor>> out = executor_->run_ranks(ranks);
  if (!out.ok()) return out.status();
  HostTensor& logits = (*out)[0];  // f32[S, vocab]
  const int64_t vocab = logits.shape.back();
  StepResult r;
  r.tokens.reserve(step.sampling.size());
  for (size_t s = 0; s < step.sampling.size(); ++s) {
    absl::StatusOr<SampledToken> t = sampler_.sample(
        absl::Span<const float>(logits.f.data() + s * vocab, vocab), step.sampling[s]);
    if (!t.ok()) return t.status();
    r.tokens.push_back(t->token);
  }
  if (step.return_logits) r.logits = std::move(logits.f);
  return r;
}

}  // namespace kiln
