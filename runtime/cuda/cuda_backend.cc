// The CUDA backend (see cuda_backend.h).
//
// Addresses are fixed at load: every IR value the plan names lives at one
// device address for the backend's lifetime (weights in one buffer,
// intermediates at their MemoryPlan offset in the arena, constants in their own
// buffer, step inputs in fixed slices of one input buffer, each layer's K/V in
// the pool, workspaces sized for the symbols' upper bounds). A step therefore
// differs from another only in (a) the bytes of the step inputs, uploaded
// before the step's launches, and (b) the integer launch arguments and grids,
// evaluated from the step's symbols.
//
// CUDA-graph invariant: a decode step's graph is keyed by (b), the step's full
// launch signature (every evaluated grid, block, shared-memory size, integer
// argument and GEMM M, in order). A graph is replayed only for a step with the
// identical signature, so the replayed launches are exactly the ones an eager
// run would issue; (a) is uploaded into the same fixed buffers before replay,
// on the same stream. No batch is padded to a bucket, so no padding row exists
// that could write K/V: every row of a replayed step is a real token whose
// slot_mapping the engine reserved. (Padding to buckets would need a scratch
// page outside the engine's pool for the padded rows' slot_mapping and page
// list; the signature key makes that unnecessary at the cost of one capture per
// distinct (S, split-KV) pair, a few milliseconds each, at most kMaxGraphs.)
#include "runtime/cuda/cuda_backend.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/view.h"
#include "models/dequantize.h"
#include "models/mapped_file.h"
#include "models/weights.h"
#include "plan/launch_binding.h"
#include "plan/launch_expr.h"
#include "plan/plan_json.h"
#include "plan/weight_parts.h"

namespace kiln {

namespace {

constexpr int64_t kAlign = 256;
constexpr size_t kMaxGraphs = 128;

int64_t align_up(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string mb(int64_t bytes) { return absl::StrFormat("%.1f MB", bytes / 1e6); }

int64_t elem_bytes(DType dt) { return block_bytes(dt) / std::max<int64_t>(1, block_elements(dt)); }

// The step inputs the engine supplies, by graph input name, and the sampling
// inputs.
enum class StepArray : uint8_t {
  kTokens,
  kPositions,
  kSlotMapping,
  kQoIndptr,
  kKvPageIndptr,
  kKvLastPageLen,
  kTemperature,
  kTopK,
  kTopP,
  kUniform,
  kCascadePrefixSeqs,  // a cascade step's layout (RuntimeInput::kCascade*)
  kCascadePrefixPages,
  kCascadeKvStart,
  kKvPageIndices,  // last: the largest, uploaded only up to its used length
};

std::optional<StepArray> step_array(std::string_view input) {
  if (input == "tokens") return StepArray::kTokens;
  if (input == "positions") return StepArray::kPositions;
  if (input == "slot_mapping") return StepArray::kSlotMapping;
  if (input == "qo_indptr") return StepArray::kQoIndptr;
  if (input == "kv_page_indptr") return StepArray::kKvPageIndptr;
  if (input == "kv_page_indices") return StepArray::kKvPageIndices;
  if (input == "kv_last_page_len") return StepArray::kKvLastPageLen;
  return std::nullopt;
}

StepArray runtime_array(RuntimeInput r) {
  switch (r) {
    case RuntimeInput::kTemperature: return StepArray::kTemperature;
    case RuntimeInput::kTopK: return StepArray::kTopK;
    case RuntimeInput::kTopP: return StepArray::kTopP;
    case RuntimeInput::kUniform: return StepArray::kUniform;
    case RuntimeInput::kCascadePrefixSeqs: return StepArray::kCascadePrefixSeqs;
    case RuntimeInput::kCascadePrefixPages: return StepArray::kCascadePrefixPages;
    case RuntimeInput::kCascadeKvStart: return StepArray::kCascadeKvStart;
    case RuntimeInput::kSampledIds: break;
  }
  return StepArray::kTokens;  // unreachable for kSampledIds (handled by the
                              // caller)
}

/// A KV cache input of the step graph (models/llama_graph.h): "k_cache.<l>" / "v_cache.<l>", or
/// an fp8e4m3 cache's scale array "k_scales.<l>" / "v_scales.<l>".
struct CacheInput {
  int layer = 0;
  bool v = false;       // V (else K)
  bool scales = false;  // the scale array (else the elements)
  /// Index of its array among the layers' K and V arrays: 2 * layer + v.
  int64_t half() const { return 2 * int64_t{layer} + (v ? 1 : 0); }
};
std::optional<CacheInput> cache_input(std::string_view name) {
  for (auto [prefix, is_v, scales] :
       {std::tuple{"k_cache.", false, false}, std::tuple{"v_cache.", true, false},
        std::tuple{"k_scales.", false, true}, std::tuple{"v_scales.", true, true}}) {
    const std::string_view p(prefix);
    if (name.substr(0, p.size()) != p) continue;
    int layer = 0;
    std::string_view digits = name.substr(p.size());
    if (digits.empty() || digits.size() > 6) return std::nullopt;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      layer = layer * 10 + (c - '0');
    }
    return CacheInput{layer, is_v, scales};
  }
  return std::nullopt;
}

uint16_t f32_to_f16_bits(float f) {  // round to nearest even (constants only)
  uint32_t b;
  std::memcpy(&b, &f, 4);
  const uint32_t sign = (b >> 16) & 0x8000;
  const int32_t exp = static_cast<int32_t>((b >> 23) & 0xff) - 127 + 15;
  uint32_t mant = b & 0x7fffff;
  if (exp <= 0) return static_cast<uint16_t>(sign);  // constants are never that small
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00);
  uint32_t h = sign | (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  if ((mant & 0x1fff) > 0x1000 || ((mant & 0x1fff) == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(h);
}

}  // namespace

struct CudaBackend::InputRegion {
  int64_t offset = 0;    // bytes into inputs_ (and the pinned mirror)
  int64_t capacity = 0;  // elements (4 bytes each)
};

struct CudaBackend::Op {
  // A kernel launch when kernel >= 0, else a GEMM, or a collective.
  int kernel = -1;
  int node = -1;  // the IR node it implements; -1 for runtime-added launches (sampling)
  const PlanLaunch* launch = nullptr;
  const PlanGemm* gemm = nullptr;
  const PlanCollective* collective = nullptr;
  StepKind when = StepKind::kAlways;
  const StepBound* bound = nullptr;  // the launch rule's or the GEMM's; empty = none
  int bound_expr = -1;               // index into exprs_ of bound->expr, -1 when empty
  bool persistent_kernel = false;    // the persistent decode kernel's launch (PlanPersistent)
  bool persistent_stage = false;     // one of the launches it runs as tasks
  bool cascade_replaced = false;  // a plain decode launch a PlanCascade replaces in cascade steps
  GemmShape shape;  // GEMM: m filled per step
  GemmOperands operands;
  /// Indices into exprs_ of every integer expression the op evaluates, in signature order:
  /// a GEMM's M; a launch's grid, block, shared bytes, then its integer arguments.
  std::vector<int> exprs;
  std::string label;  // "node 12 rmsnorm_residual (<key>)" for errors
};

/// Launch arguments from the backend's fixed addresses (plan/launch_binding.h packs them).
struct CudaBackend::Resolver : LaunchResolver {
  explicit Resolver(const CudaBackend& b) : b(b) {}
  absl::StatusOr<uint64_t> tensor(const std::string& value) override {
    if (auto it = b.addresses_.find(value); it != b.addresses_.end()) return it->second;
    return b.address(value);
  }
  absl::StatusOr<uint64_t> workspace(const std::string& name) override {
    if (auto it = b.addresses_.find("workspace:" + name); it != b.addresses_.end()) {
      return it->second;
    }
    return absl::NotFoundError(absl::StrCat("no workspace ", name));
  }
  absl::StatusOr<uint64_t> runtime(RuntimeInput input) override {
    if (input == RuntimeInput::kSampledIds) return b.sampled_ids_;
    return b.inputs_.ptr() + b.regions_[static_cast<size_t>(runtime_array(input))].offset;
  }
  const CudaBackend& b;
};

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::create(const Plan& plan,
                                                                 const BackendOptions& options,
                                                                 const PlanBlobReader& blobs) {
  return create_rank(plan, options, blobs, {});
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::create_rank(const Plan& plan,
                                                                      const BackendOptions& options,
                                                                      const PlanBlobReader& blobs,
                                                                      TensorParallelRank tp) {
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<GpuDevice> device = open_gpu(tp.rank);
  if (!device.ok()) {
    return absl::Status(device.status().code(),
                        absl::StrCat("no GPU found: ", device.status().message()));
  }
  if (device->arch() != plan.arch) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the plan was compiled for ", plan.arch.empty() ? "an unknown arch" : plan.arch,
        ", this GPU is ", device->describe(), ": recompile it for this GPU with `kiln compile ",
        plan.model_path.empty() ? "<model>" : plan.model_path, " --arch ", device->arch(),
        " -o <plan>.kplan`"));
  }
  if (plan.ranks > 1 && tp.comm == nullptr) {
    // The plan's collectives are where its ranks meet; one GPU running one rank's program alone
    // would compute a wrong (partial) result, so it is refused rather than run.
    return absl::FailedPreconditionError(absl::StrCat(
        "the plan is tensor-parallel over ", plan.ranks, " ranks (kiln compile --tp ", plan.ranks,
        "): it runs on ", plan.ranks, " GPUs through TensorParallelBackend, not on one"));
  }
  if (tp.comm != nullptr &&
      (tp.comm->ranks() != plan.ranks || tp.comm->rank() != tp.rank || tp.nccl == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", tp.rank, " of a ", plan.ranks,
                                                   "-rank plan given communicator rank ",
                                                   tp.comm->rank(), " of ", tp.comm->ranks()));
  }
  if (plan.launches.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the plan has no GPU kernels (it was built for the CPU reference backend only, e.g. at "
        "f32): compile it for this GPU with `kiln compile ",
        plan.model_path.empty() ? "<model>" : plan.model_path, " --arch ", device->arch(),
        " -o <plan>.kplan` (bf16 or f16), or run it with --device cpu"));
  }
  std::unique_ptr<CudaBackend> b(new CudaBackend());
  b->plan_ = plan;
  b->tp_ = std::move(tp);
  b->debug_sync_ = options.debug_sync;
  b->cuda_graphs_ = options.cuda_graphs && !options.debug_sync;
  b->persistent_ =
      options.persistent != BackendOptions::Persistent::kOff && plan.persistent.has_value();
  b->persistent_auto_ = b->persistent_ && options.persistent == BackendOptions::Persistent::kAuto;
  b->device_ = std::make_unique<GpuDevice>(std::move(*device));
  absl::StatusOr<std::unique_ptr<Graph>> graph = parse_graph(plan.ir);
  if (!graph.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the plan's IR does not parse: ", graph.status().message()));
  }
  b->graph_ = std::move(*graph);
  absl::StatusOr<std::unique_ptr<GemmRunner>> gemm = GemmRunner::create(*b->device_);
  if (!gemm.ok()) return gemm.status();
  b->gemm_ = std::move(*gemm);

  if (absl::Status s = b->load_kernels(blobs); !s.ok()) return s;
  if (absl::Status s = b->upload_weights(blobs, options); !s.ok()) return s;
  if (absl::Status s = b->allocate_activations(); !s.ok()) return s;
  if (absl::Status s = b->allocate_kv(options); !s.ok()) return s;
  if (absl::Status s = b->prepare_ops(); !s.ok()) return s;
  if (absl::Status s = b->prepare_persistent(); !s.ok()) return s;
  if (absl::Status s = b->warm_up(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("warm-up step: ", s.message()));
  }
  absl::StrAppend(&b->report_, "; ", b->ops_.size(), " ops (", b->kernels_.size(),
                  " kernels, cuBLASLt), ready in ", absl::StrFormat("%.2f s", seconds_since(t0)));
  return b;
}

CudaBackend::~CudaBackend() {
  if (!device_) return;
  for (auto& [sig, exec] : graphs_) device_->destroy_graph(exec);
  device_->free_host(host_inputs_);
  device_->free_host(host_out_);
}

int64_t CudaBackend::kv_bytes_per_token() const { return plan_.kv.bytes_per_token(); }

absl::Status CudaBackend::load_kernels(const PlanBlobReader& blobs) {
  for (const PlanKernel& k : plan_.kernels) {
    if (k.cubin_blob < 0 || !blobs) {
      return absl::FailedPreconditionError(absl::StrCat(
          "kernel ", k.key, " has no cubin in the plan: recompile with `kiln compile --arch ",
          device_->arch(), "`"));
    }
    absl::StatusOr<std::string_view> cubin = blobs(k.cubin_blob);
    if (!cubin.ok()) return cubin.status();
    absl::StatusOr<GpuKernel> loaded = device_->load_kernel(std::string(*cubin), k.key);
    if (!loaded.ok()) return loaded.status();
    kernels_.push_back(*loaded);
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::upload_weights(const PlanBlobReader& blobs,
                                         const BackendOptions& options) {
  (void)options;
  const auto t0 = std::chrono::steady_clock::now();
  const ValueNames names(*graph_);
  // One buffer, each param at a 256-byte boundary (cuBLASLt's default alignment
  // assumption).
  struct Slot {
    const Value* param;
    const PlanWeight* weight;
    int64_t offset, bytes;
  };
  std::vector<Slot> slots;
  int64_t total = 0;
  for (const Value* p : graph_->params()) {
    const PlanWeight* w = plan_.find_weight(p->name, plan_.ranks > 1 ? tp_.rank : -1);
    if (w == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("the plan has no weight for parameter @", p->name,
                       plan_.ranks > 1 ? absl::StrCat(" of rank ", tp_.rank) : ""));
    }
    absl::StatusOr<int64_t> n = graph_->symbols().max_elements(p->type.shape);
    if (!n.ok()) return n.status();
    const int64_t bytes = *n * elem_bytes(p->type.dtype);
    slots.push_back({p, w, total, bytes});
    total = align_up(total + bytes, kAlign);
  }
  absl::StatusOr<DeviceBuffer> buf = device_->alloc(total);
  if (!buf.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("weights need ", mb(total), " on the GPU: ", buf.status().message()));
  }
  weights_ = std::move(*buf);
  std::map<std::string, std::unique_ptr<MappedFile>> files;
  int64_t converted = 0, done = 0;
  std::vector<uint8_t> host;
  const bool tty = isatty(STDERR_FILENO) != 0;
  // The bytes of a weight stored in the plan or the checkpoint (not a derived one).
  auto stored = [&](const PlanWeight& w) -> absl::StatusOr<absl::Span<const uint8_t>> {
    if (w.packed()) {
      if (!blobs) return absl::InternalError("packed weights but no blob reader");
      absl::StatusOr<std::string_view> b = blobs(w.blob);
      if (!b.ok()) return b.status();
      return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(b->data()), b->size());
    }
    auto it = files.find(w.file);
    if (it == files.end()) {
      absl::StatusOr<std::unique_ptr<MappedFile>> f = MappedFile::open(w.file);
      if (!f.ok()) {
        return absl::FailedPreconditionError(
            absl::StrCat("weight ", w.name, ": cannot map ", w.file, " (", f.status().message(),
                         "); recompile the plan from the model's current location"));
      }
      it = files.emplace(w.file, std::move(*f)).first;
    }
    if (w.offset + w.size > it->second->size()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "weight ", w.name, ": ", w.file, " is ", it->second->size(), " bytes, the plan needs [",
          w.offset, ", ", w.offset + w.size, "); the file changed: recompile the plan"));
    }
    return it->second->bytes().subspan(w.offset, w.size);
  };
  std::vector<uint8_t> assembled;
  for (const Slot& s : slots) {
    const PlanWeight& w = *s.weight;
    absl::Span<const uint8_t> src;
    if (w.derived()) {
      // Stacked from row ranges of stored weights (plan/weight_parts.h), then converted whole.
      absl::StatusOr<std::vector<WeightByteRange>> ranges = weight_byte_ranges(plan_, w);
      if (!ranges.ok()) return ranges.status();
      assembled.clear();
      for (const WeightByteRange& r : *ranges) {
        absl::StatusOr<absl::Span<const uint8_t>> part = stored(*r.source);
        if (!part.ok()) return part.status();
        assembled.insert(assembled.end(), part->begin() + r.offset,
                         part->begin() + r.offset + r.size);
      }
      src = assembled;
    } else {
      absl::StatusOr<absl::Span<const uint8_t>> own = stored(w);
      if (!own.ok()) return own.status();
      src = *own;
    }
    const DType want = s.param->type.dtype;
    const uint8_t* data = src.data();
    if (w.dtype != want) {
      Weight tmp{w.name, w.dtype, w.shape, src, w.file, w.offset, w.source_name};
      const int64_t n = s.bytes / elem_bytes(want);
      if (tmp.elements() != n) {
        return absl::InvalidArgumentError(absl::StrCat("weight ", w.name, " has ", tmp.elements(),
                                                       " elements, @", s.param->name, " needs ",
                                                       n));
      }
      host.resize(s.bytes);
      absl::Status st;
      if (want == DType::kBF16) {
        st = to_bf16(tmp, absl::Span<uint16_t>(reinterpret_cast<uint16_t*>(host.data()), n));
      } else if (want == DType::kF32) {
        st = to_f32(tmp, absl::Span<float>(reinterpret_cast<float*>(host.data()), n));
      } else {
        st = absl::UnimplementedError(absl::StrCat("weight ", w.name, ": converting ",
                                                   dtype_name(w.dtype), " to ", dtype_name(want),
                                                   " on upload is not supported"));
      }
      if (!st.ok()) return st;
      data = host.data();
      ++converted;
    } else if (static_cast<int64_t>(src.size()) != s.bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "weight ", w.name, " is ", src.size(), " bytes, @", s.param->name, " needs ", s.bytes));
    }
    if (absl::Status st = device_->upload(weights_.ptr() + s.offset, data, s.bytes); !st.ok()) {
      return st;
    }
    addresses_[names(s.param)] = weights_.ptr() + s.offset;
    done += s.bytes;
    if (tty) {
      std::fprintf(stderr, "\ruploading weights %3d%% (%s of %s)",
                   static_cast<int>(100 * done / std::max<int64_t>(1, total)), mb(done).c_str(),
                   mb(total).c_str());
    }
  }
  if (tty) std::fprintf(stderr, "\r\033[K");
  weight_bytes_ = done;
  report_ = absl::StrCat("cuda: ", device_->describe(), "; weights ", mb(done), " (", slots.size(),
                         " tensors",
                         converted ? absl::StrCat(", ", converted, " converted on the host") : "",
                         ") uploaded in ", absl::StrFormat("%.2f s", seconds_since(t0)));
  return absl::OkStatus();
}

absl::Status CudaBackend::allocate_activations() {
  const ValueNames names(*graph_);
  const SymbolTable& symtab = graph_->symbols();
  // The symbols a step binds (stage_inputs); a plan declaring any other cannot run here.
  for (const Symbol& s : symtab.symbols()) {
    if (s.name != "T" && s.name != "S" && s.name != "P" && s.name != "K" && s.name != "NP") {
      return absl::UnimplementedError(
          absl::StrCat("the plan's IR declares symbol ", s.name,
                       ", which the CUDA backend does not bind (it binds T, S, P, K and NP)"));
    }
    symbol_bounds_.emplace_back(s.name, s.upper_bound);
  }
  // The cascade symbols (plan.h) are bounded by S and K: members are sequences of the step, the
  // prefix and the longest suffix lie within the longest KV range.
  int64_t s_bound = 1, k_bound = 1;
  for (const auto& [name, bound] : symbol_bounds_) {
    if (name == "S") s_bound = bound;
    if (name == "K") k_bound = bound;
  }
  symbol_bounds_.emplace_back(kCascadeMembersSymbol, s_bound);
  symbol_bounds_.emplace_back(kCascadePrefixSymbol, k_bound);
  symbol_bounds_.emplace_back(kCascadeSuffixSymbol, k_bound);

  // The arena, every intermediate at its MemoryPlan offset, poisoned (0xFF =
  // NaN) so a read of memory no launch wrote shows up in the logits.
  if (!plan_.memory) {
    return absl::FailedPreconditionError(
        "the plan has no activation memory plan (plan-memory did not run): "
        "recompile it");
  }
  const MemoryPlan& mp = *plan_.memory;
  absl::StatusOr<DeviceBuffer> arena = device_->alloc(mp.arena_bytes);
  if (!arena.ok()) return arena.status();
  arena_ = std::move(*arena);
  if (absl::Status s = device_->fill_bytes(arena_.ptr(), 0xFF, mp.arena_bytes); !s.ok()) return s;
  for (const MemoryPlan::Buffer& buf : mp.buffers) {
    if (buf.offset < 0 || buf.offset + buf.size > mp.arena_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("memory plan: ", buf.value, " at [", buf.offset, ", ", buf.offset + buf.size,
                       ") is outside the arena of ", mp.arena_bytes, " bytes"));
    }
    addresses_[buf.value] = arena_.ptr() + buf.offset;
  }

  // Constants: their own buffer (arena bytes are reused by other values),
  // written once.
  int64_t cbytes = 0;
  std::vector<std::pair<const PlanConstant*, int64_t>> cslots;
  std::map<std::string, const Value*> by_name;
  for (const auto& n : graph_->nodes()) {
    for (const Value* o : n->outputs) by_name[names(o)] = o;
  }
  for (const PlanConstant& c : plan_.constants) {
    auto it = by_name.find(c.value);
    int64_t elems = 1;
    if (it != by_name.end()) {
      absl::StatusOr<int64_t> n = symtab.max_elements(it->second->type.shape);
      if (n.ok()) elems = std::max<int64_t>(1, *n);
    }
    cslots.emplace_back(&c, cbytes);
    cbytes = align_up(cbytes + elems * std::max<int64_t>(4, elem_bytes(c.dtype)), kAlign);
  }
  absl::StatusOr<DeviceBuffer> cbuf = device_->alloc(std::max<int64_t>(cbytes, 1));
  if (!cbuf.ok()) return cbuf.status();
  constants_ = std::move(*cbuf);
  for (size_t i = 0; i < cslots.size(); ++i) {
    const PlanConstant& c = *cslots[i].first;
    const int64_t end = i + 1 < cslots.size() ? cslots[i + 1].second : cbytes;
    const int64_t eb = elem_bytes(c.dtype);
    std::vector<uint8_t> bytes(end - cslots[i].second);
    const float f = static_cast<float>(c.scalar);
    for (size_t off = 0; off + eb <= bytes.size(); off += eb) {
      if (c.dtype == DType::kF32) {
        std::memcpy(&bytes[off], &f, 4);
      } else if (c.dtype == DType::kBF16) {
        const uint16_t h = f32_to_bf16(f);
        std::memcpy(&bytes[off], &h, 2);
      } else if (c.dtype == DType::kF16) {
        const uint16_t h = f32_to_f16_bits(f);
        std::memcpy(&bytes[off], &h, 2);
      } else if (c.dtype == DType::kI32) {
        const int32_t v = static_cast<int32_t>(c.scalar);
        std::memcpy(&bytes[off], &v, 4);
      } else {
        return absl::UnimplementedError(
            absl::StrCat("constant ", c.value, " of dtype ", dtype_name(c.dtype)));
      }
    }
    const DevicePtr p = constants_.ptr() + cslots[i].second;
    if (absl::Status s = device_->upload(p, bytes.data(), bytes.size()); !s.ok()) return s;
    addresses_[c.value] = p;
  }

  // Workspaces, sized for the symbols' upper bounds.
  int64_t wbytes = 0;
  std::vector<std::pair<std::string, int64_t>> wslots;
  for (const PlanWorkspace& w : plan_.workspaces) {
    absl::StatusOr<int64_t> n = eval_launch_expr(w.bytes, symbol_bounds_);
    if (!n.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("workspace ", w.name, " size: ", n.status().message()));
    }
    wslots.emplace_back(w.name, wbytes);
    wbytes = align_up(wbytes + std::max<int64_t>(*n, 1), kAlign);
  }
  absl::StatusOr<DeviceBuffer> wbuf = device_->alloc(std::max<int64_t>(wbytes, 1));
  if (!wbuf.ok()) return wbuf.status();
  workspaces_ = std::move(*wbuf);
  for (size_t i = 0; i < wslots.size(); ++i) {
    const auto& [name, off] = wslots[i];
    addresses_["workspace:" + name] = workspaces_.ptr() + off;
    if (plan_.workspaces[i].zeroed) {
      const int64_t end = i + 1 < wslots.size() ? wslots[i + 1].second : wbytes;
      if (absl::Status s = device_->fill_bytes(workspaces_.ptr() + off, 0, end - off); !s.ok()) {
        return s;
      }
    }
  }

  // Step inputs: one fixed slice per array (graph inputs and sampling inputs),
  // so a graph captured once reads each step's values from the same addresses.
  regions_.assign(static_cast<size_t>(StepArray::kKvPageIndices) + 1, {});
  std::vector<std::pair<StepArray, int64_t>> caps;
  int64_t s_max = 1;
  if (const Symbol* s = symtab.find("S")) s_max = s->upper_bound;
  for (const Value* in : graph_->inputs()) {
    if (cache_input(in->name)) continue;  // in the KV pool
    std::optional<StepArray> a = step_array(in->name);
    if (!a) {
      return absl::UnimplementedError(
          absl::StrCat("graph input %", in->name, " has no binding in the CUDA backend"));
    }
    if (in->type.dtype != DType::kI32) {
      return absl::InvalidArgumentError(absl::StrCat("graph input %", in->name, " must be i32"));
    }
    absl::StatusOr<int64_t> n = symtab.max_elements(in->type.shape);
    if (!n.ok()) return n.status();
    caps.emplace_back(*a, *n);
  }
  for (StepArray a :
       {StepArray::kTemperature, StepArray::kTopK, StepArray::kTopP, StepArray::kUniform,
        StepArray::kCascadePrefixSeqs, StepArray::kCascadeKvStart}) {
    caps.emplace_back(a, s_max);
  }
  // The prefix's pages: at most those of the longest KV range.
  caps.emplace_back(StepArray::kCascadePrefixPages,
                    (k_bound + plan_.kv.page_size - 1) / std::max<int64_t>(1, plan_.kv.page_size));
  std::sort(caps.begin(), caps.end());
  int64_t ibytes = 0;
  for (const auto& [a, n] : caps) {
    regions_[static_cast<size_t>(a)] = {ibytes, n};
    ibytes = align_up(ibytes + 4 * std::max<int64_t>(n, 1), kAlign);
  }
  const int64_t ids_offset = ibytes;
  ibytes += align_up(4 * s_max, kAlign);
  absl::StatusOr<DeviceBuffer> ibuf = device_->alloc(ibytes);
  if (!ibuf.ok()) return ibuf.status();
  inputs_ = std::move(*ibuf);
  if (absl::Status s = device_->fill_bytes(inputs_.ptr(), 0, ibytes); !s.ok()) return s;
  absl::StatusOr<void*> host = device_->alloc_host(ibytes);
  if (!host.ok()) return host.status();
  host_inputs_ = *host;
  std::memset(host_inputs_, 0, ibytes);
  sampled_ids_ = inputs_.ptr() + ids_offset;
  for (const Value* in : graph_->inputs()) {
    if (std::optional<StepArray> a = step_array(in->name)) {
      addresses_[names(in)] = inputs_.ptr() + regions_[static_cast<size_t>(*a)].offset;
    }
  }

  // The logits output and the pinned buffer its rows come back in.
  if (graph_->outputs().empty()) return absl::InvalidArgumentError("the plan's IR has no output");
  const Value* logits = graph_->outputs()[0].value;
  if (logits->type.dtype != DType::kF32 || logits->type.shape.size() != 2 ||
      logits->type.shape[1].is_symbolic()) {
    return absl::InvalidArgumentError("the plan's output must be logits f32[S, vocab]");
  }
  vocab_ = logits->type.shape[1].value;
  absl::StatusOr<DevicePtr> la = address(names(logits));
  if (!la.ok()) return la.status();
  logits_ = *la;
  host_out_bytes_ = static_cast<size_t>(4 * s_max * (vocab_ + 1) + kAlign);
  absl::StatusOr<void*> out = device_->alloc_host(host_out_bytes_);
  if (!out.ok()) return out.status();
  host_out_ = *out;
  absl::StrAppend(&report_, "; arena ", mb(mp.arena_bytes), " (max-live lower bound ",
                  mb(mp.lower_bound_bytes), "), workspaces ", mb(wbytes));
  return absl::OkStatus();
}

absl::Status CudaBackend::allocate_kv(const BackendOptions& options) {
  // The pool's bytes per page come from the plan's KvLayout (their one home); the IR's cache
  // inputs [NP, page_size, kv_heads, head_dim] (and an fp8e4m3 cache's scale arrays [NP,
  // page_size, kv_heads]) must agree with it.
  const KvLayout& kv = plan_.kv;
  if (kv.dtype != DType::kBF16 && kv.dtype != DType::kF16 && kv.dtype != DType::kFP8E4M3) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the plan's KV cache is ", dtype_name(kv.dtype),
        ": the CUDA backend keeps bf16, f16 or fp8e4m3 (with scales) caches; recompile it with "
        "--dtype bf16 (and --kv-dtype fp8e4m3 for half the KV bytes), or run it with --device "
        "cpu"));
  }
  int layers = 0, scale_arrays = 0;
  for (const Value* in : graph_->inputs()) {
    std::optional<CacheInput> c = cache_input(in->name);
    if (!c) continue;
    layers = std::max(layers, c->layer + 1);
    scale_arrays += c->scales;
    int64_t per_page = elem_bytes(in->type.dtype);
    for (size_t d = 1; d < in->type.shape.size(); ++d) {
      if (in->type.shape[d].is_symbolic()) {
        return absl::InvalidArgumentError(
            absl::StrCat("cache input %", in->name, " has a symbolic page shape"));
      }
      per_page *= in->type.shape[d].value;
    }
    const int64_t want = c->scales ? kv.scale_bytes_per_page() : kv.data_bytes_per_page();
    const DType want_dtype = c->scales ? DType::kF32 : kv.dtype;
    if (per_page != want || in->type.dtype != want_dtype) {
      return absl::InvalidArgumentError(
          absl::StrCat("cache input %", in->name, " is ", in->type.to_string(), " (", per_page,
                       " bytes per page) but the plan's KV layout says ", dtype_name(want_dtype),
                       ", ", want, " bytes per page: the plan is inconsistent, recompile it"));
    }
  }
  if (layers > 0 && layers != kv.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("the plan's IR has KV caches for ", layers,
                                                   " layers, its KV layout ", kv.num_layers,
                                                   ": the plan is inconsistent, recompile it"));
  }
  if (scale_arrays != (kv.has_scales() ? 2 * layers : 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the plan's KV cache is ", dtype_name(kv.dtype), " but its IR has ",
                     scale_arrays, " scale arrays for ", layers,
                     " layers (an fp8e4m3 cache has a K and a V scale array per "
                     "layer, no other cache has any): the plan is inconsistent, recompile it"));
  }
  kv_layers_ = layers;
  kv_page_bytes_ = kv.data_bytes_per_page();
  kv_scale_page_bytes_ = kv.scale_bytes_per_page();
  const int64_t per_page = std::max<int64_t>(1, layers > 0 ? kv.bytes_per_page() : 0);
  int64_t pages = 0;
  std::string how;
  if (options.kv_pages > 0) {
    pages = options.kv_pages;
    how = "--kv-pages";
  } else if (options.kv_cache_gb > 0) {
    pages = static_cast<int64_t>(options.kv_cache_gb * (1 << 30)) / per_page;
    how = absl::StrFormat("--kv-cache-gb %g", options.kv_cache_gb);
  } else {
    size_t free_bytes = 0, total_bytes = 0;
    if (absl::Status s = device_->memory_info(&free_bytes, &total_bytes); !s.ok()) return s;
    pages = static_cast<int64_t>(static_cast<double>(free_bytes) * options.gpu_memory_fraction) /
            per_page;
    how = absl::StrFormat("%.0f%% of %s free", 100 * options.gpu_memory_fraction,
                          mb(static_cast<int64_t>(free_bytes)));
  }
  int64_t np_bound = 0;
  if (const Symbol* np = graph_->symbols().find("NP")) np_bound = np->upper_bound;
  if (np_bound > 0 && pages > np_bound) pages = np_bound;
  if (pages < 1) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no room for a single KV page (", how, "; a page takes ", mb(per_page), ")"));
  }
  absl::StatusOr<DeviceBuffer> pool = device_->alloc(pages * per_page);
  if (!pool.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV pool of ", pages, " pages (",
                                                     mb(pages * per_page), ", ", how,
                                                     "): ", pool.status().message()));
  }
  kv_ = std::move(*pool);
  if (absl::Status s = device_->fill_bytes(kv_.ptr(), 0, pages * per_page); !s.ok()) return s;
  kv_pages_ = pages;
  const ValueNames names(*graph_);
  for (const Value* in : graph_->inputs()) {
    if (std::optional<CacheInput> c = cache_input(in->name)) {
      addresses_[names(in)] = kv_array(c->half(), c->scales);
    }
  }
  absl::StrAppend(&report_, "; KV pool ", pages, " pages x ", kv.page_size, " = ",
                  pages * kv.page_size, " tokens (", mb(pages * per_page), " ",
                  dtype_name(kv.dtype), kv.has_scales() ? " with per-head scales" : "", ", ", how,
                  ")");
  return absl::OkStatus();
}

DevicePtr CudaBackend::kv_array(int64_t half, bool scales) const {
  // [layer][K|V][page][page_size, kv_heads, head_dim] elements, then (fp8e4m3) the scales in the
  // same order: [layer][K|V][page][page_size, kv_heads] f32, page for page with the elements.
  const int64_t elements = 2 * int64_t{kv_layers_} * kv_pages_ * kv_page_bytes_;
  return scales ? kv_.ptr() + elements + half * kv_pages_ * kv_scale_page_bytes_
                : kv_.ptr() + half * kv_pages_ * kv_page_bytes_;
}

absl::StatusOr<DevicePtr> CudaBackend::address(std::string_view value) const {
  std::string name(value);
  for (int hops = 0; hops < 64; ++hops) {
    if (auto it = addresses_.find(name); it != addresses_.end()) return it->second;
    const PlanAlias* next = nullptr;
    for (const PlanAlias& a : plan_.aliases) {
      if (a.value == name) next = &a;
    }
    if (next == nullptr) break;
    name = next->of;
  }
  return absl::NotFoundError(
      absl::StrCat("value ", std::string(value),
                   " has no device buffer (not an input, weight, constant, alias or arena "
                   "buffer of the plan)"));
}

absl::Status CudaBackend::prepare_ops() {
  // Every alias gets its own entry, so a step's look-ups are one hash probe each.
  for (const PlanAlias& a : plan_.aliases) {
    if (addresses_.contains(a.value)) continue;
    if (absl::StatusOr<DevicePtr> p = address(a.of); p.ok()) addresses_[a.value] = *p;
  }
  // Program order: ascending node, launches of a node in list order;
  // runtime-added launches (node -1: sampling) after the graph.
  std::vector<std::pair<int64_t, Op>> order;
  auto key = [](int node) -> int64_t { return node < 0 ? int64_t{1} << 40 : node; };
  for (const PlanLaunch& l : plan_.launches) {
    if (l.kernel < 0 || l.kernel >= static_cast<int>(plan_.kernels.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("launch of node ", l.node, " names kernel ", l.kernel));
    }
    const PlanKernel& k = plan_.kernels[l.kernel];
    Op op;
    op.kernel = l.kernel;
    op.node = l.node;
    op.launch = &l;
    op.when = l.rule.when;
    op.bound = &l.rule.bound;
    op.label = absl::StrCat("node ", l.node, " ", family_name(k.family), " (", k.key, ")");
    // Bound once at the symbols' upper bounds, so a binding error shows at load, not mid-step.
    Resolver resolver(*this);
    if (absl::StatusOr<std::vector<BoundArg>> bound = bind_launch(k, l, symbol_bounds_, resolver);
        !bound.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(op.label, ": ", bound.status().message()));
    }
    order.emplace_back(key(l.node) * 2 + 1, std::move(op));
  }
  for (const PlanGemm& g : plan_.gemms) {
    Op op;
    op.gemm = &g;
    op.node = g.node;
    op.bound = &g.bound;
    op.label = absl::StrCat("node ", g.node, " gemm ", g.out, " = ", g.a, "·", g.b, "ᵀ");
    op.shape = {0, g.n, g.k, g.a_dtype, g.b_dtype, g.out_dtype, g.a_dtype, g.epilogue};
    auto bind = [&](const std::string& v, DevicePtr* out) -> absl::Status {
      if (v.empty()) return absl::OkStatus();
      absl::StatusOr<DevicePtr> addr = address(v);
      if (!addr.ok())
        return absl::NotFoundError(absl::StrCat(op.label, ": ", addr.status().message()));
      *out = *addr;
      return absl::OkStatus();
    };
    for (auto [v, out] :
         {std::pair{&g.a, &op.operands.a}, std::pair{&g.b, &op.operands.b},
          std::pair{&g.bias, &op.operands.bias}, std::pair{&g.residual, &op.operands.residual},
          std::pair{&g.out, &op.operands.out}}) {
      if (absl::Status s = bind(*v, out); !s.ok()) return s;
    }
    if (!g.bias.empty()) {
      // The bias is a param: its device dtype is the IR param's.
      for (const Value* p : graph_->params()) {
        if ("@" + p->name == g.bias) op.shape.bias_dtype = p->type.dtype;
      }
    }
    order.emplace_back(key(g.node) * 2, std::move(op));
  }
  int64_t gather_bytes = 0;  // the largest all_gather of several rows, as NCCL returns it
  for (const PlanCollective& c : plan_.collectives) {
    Op op;
    op.collective = &c;
    op.node = c.node;
    op.label =
        absl::StrCat("node ", c.node, " ", collective_kind_name(c.kind), " ", c.out, " = ", c.in);
    if (plan_.ranks < 2 || tp_.comm == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat(op.label, ": a collective in a plan of one rank"));
    }
    for (const std::string* v : {&c.in, &c.out}) {
      if (absl::StatusOr<DevicePtr> a = address(*v); !a.ok()) {
        return absl::NotFoundError(absl::StrCat(op.label, ": ", a.status().message()));
      }
    }
    if (c.kind == CollectiveKind::kAllGather && c.outer != "1") {
      absl::StatusOr<int64_t> rows = eval_launch_expr(c.outer, symbol_bounds_);
      if (!rows.ok())
        return absl::InvalidArgumentError(absl::StrCat(op.label, ": ", rows.status().message()));
      gather_bytes = std::max(gather_bytes, *rows * c.inner * plan_.ranks * elem_bytes(c.dtype));
    }
    order.emplace_back(key(c.node) * 2, std::move(op));
  }
  if (gather_bytes > 0) {
    absl::StatusOr<DeviceBuffer> buf = device_->alloc(gather_bytes);
    if (!buf.ok()) return buf.status();
    gather_rows_ = std::move(*buf);
  }
  absl::flat_hash_map<std::string, int> expr_ids;
  auto expr = [&](const std::string& e) {
    auto [it, added] = expr_ids.emplace(e, static_cast<int>(exprs_.size()));
    if (added) exprs_.push_back(e);
    return it->second;
  };
  for (auto& [k, op] : order) {
    if (op.bound != nullptr && !op.bound->empty()) op.bound_expr = expr(op.bound->expr);
    if (op.gemm != nullptr) {
      op.exprs.push_back(expr(op.gemm->m));
      continue;
    }
    if (op.collective != nullptr) {
      op.exprs.push_back(expr(op.collective->outer));
      continue;
    }
    const LaunchRule& r = op.launch->rule;
    for (const std::string& e : r.grid) op.exprs.push_back(expr(e));
    for (const std::string& e : r.block) op.exprs.push_back(expr(e));
    op.exprs.push_back(expr(r.dynamic_shared_bytes));
    for (const LaunchArg& a : op.launch->args) {
      if (a.kind == LaunchArg::Kind::kInt) op.exprs.push_back(expr(a.expr));
    }
  }
  std::stable_sort(order.begin(), order.end(),
                   [](const auto& x, const auto& y) { return x.first < y.first; });
  for (auto& [k, op] : order) ops_.push_back(std::move(op));
  return absl::OkStatus();
}

absl::Status CudaBackend::prepare_persistent() {
  // Address tables, resolved now that every buffer (the KV pool too) has its place.
  Resolver resolver(*this);
  for (const PlanWorkspace& w : plan_.workspaces) {
    if (w.addresses.empty()) continue;
    std::vector<uint64_t> table;
    for (size_t i = 0; i < w.addresses.size(); ++i) {
      const LaunchArg& a = w.addresses[i];
      absl::StatusOr<uint64_t> p = a.kind == LaunchArg::Kind::kTensor      ? resolver.tensor(a.value)
                                   : a.kind == LaunchArg::Kind::kWorkspace ? resolver.workspace(a.value)
                                   : a.kind == LaunchArg::Kind::kRuntime   ? resolver.runtime(a.runtime)
                                   : absl::InvalidArgumentError("not an address");
      if (!p.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("workspace ", w.name, " address ", i, ": ",
                                                       p.status().message()));
      }
      table.push_back(*p);
    }
    absl::StatusOr<int64_t> bytes = eval_launch_expr(w.bytes, symbol_bounds_);
    if (!bytes.ok() || *bytes < static_cast<int64_t>(8 * table.size())) {
      return absl::InvalidArgumentError(absl::StrCat("workspace ", w.name, " (", w.bytes,
                                                     " bytes) cannot hold its ", table.size(),
                                                     " addresses"));
    }
    if (absl::Status s = device_->upload(addresses_.at("workspace:" + w.name), table.data(),
                                         8 * table.size());
        !s.ok()) {
      return s;
    }
  }
  for (Op& op : ops_) {
    if (op.launch == nullptr) continue;
    const int index = static_cast<int>(op.launch - plan_.launches.data());
    for (const PlanCascade& c : plan_.cascades) op.cascade_replaced |= index == c.decode;
  }
  if (!plan_.persistent) return absl::OkStatus();
  const PlanPersistent& ps = *plan_.persistent;
  for (Op& op : ops_) {
    if (op.launch == nullptr) continue;
    const int index = static_cast<int>(op.launch - plan_.launches.data());
    op.persistent_kernel = index == ps.launch;
    op.persistent_stage = std::binary_search(ps.stages.begin(), ps.stages.end(), index);
  }
  const int stages = static_cast<int>(ps.stages.size());
  if (!persistent_) {
    absl::StrAppend(&report_, "; persistent decode kernel off (", stages,
                    " stages launched one by one)");
    return absl::OkStatus();
  }
  // Every block must be resident at once: the grid is what the GPU holds.
  const PlanLaunch& l = plan_.launches[ps.launch];
  absl::StatusOr<int64_t> threads = eval_launch_expr(l.rule.block[0], symbol_bounds_);
  absl::StatusOr<int64_t> smem = eval_launch_expr(l.rule.dynamic_shared_bytes, symbol_bounds_);
  if (!threads.ok() || !smem.ok()) {
    return absl::InvalidArgumentError("the persistent decode kernel's block is not constant");
  }
  absl::StatusOr<int> per_sm = device_->resident_blocks_per_sm(
      kernels_[l.kernel], static_cast<int>(*threads), static_cast<size_t>(*smem));
  if (!per_sm.ok() || *per_sm < 1) {
    persistent_ = false;
    absl::StrAppend(&report_, "; the persistent decode kernel does not fit on this GPU (",
                    per_sm.ok() ? "0 blocks per SM" : per_sm.status().message(),
                    "): its stages launch one by one");
    return absl::OkStatus();
  }
  persistent_blocks_ = device_->sm_count() * *per_sm;
  absl::StrAppend(&report_, "; persistent decode kernel: ", stages, " stages on ",
                  persistent_blocks_, " blocks (", *per_sm, " per SM)");
  return absl::OkStatus();
}

absl::Status CudaBackend::warm_up() {
  // One 2-token prefill and one decode of a throw-away sequence in page 0, so the first real
  // step pays no one-time costs (cuBLASLt's initialization, lazy kernel loading, the first
  // heuristic queries, the decode graph for one sequence). Safe for the engine's later use of
  // page 0: attention only reads the K/V rows a sequence's own steps wrote.
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t ps = plan_.kv.page_size;
  int64_t t_max = 1;
  for (const auto& [name, bound] : symbol_bounds_) {
    if (name == "T") t_max = bound;
  }
  if (ps < 3 || t_max < 2) return absl::OkStatus();
  StepRequest step;
  step.inputs.tokens = {0, 0};
  StepMetadata& m = step.inputs.metadata;
  m.positions = {0, 1};
  m.slot_mapping = {0, 1};
  m.qo_indptr = {0, 2};
  m.kv_page_indptr = {0, 1};
  m.kv_page_indices = {0};
  m.kv_last_page_len = {2};
  m.max_kv_len = 2;
  step.sampling = {SequenceSampling{}};
  if (absl::StatusOr<StepResult> r = run_step(step); !r.ok()) return r.status();
  step.inputs.tokens = {0};
  m.positions = {2};
  m.slot_mapping = {2};
  m.qo_indptr = {0, 1};
  m.kv_last_page_len = {3};
  m.max_kv_len = 3;
  if (absl::StatusOr<StepResult> r = run_step(step); !r.ok()) return r.status();
  if (persistent_auto_ && persistent_) {
    // The plan keeps the faster path on this GPU: the same decode step (it rewrites slot 2)
    // replayed both ways, the median of 9 after a capture each.
    auto median_ms = [&](bool on) -> absl::StatusOr<double> {
      persistent_ = on;
      std::vector<double> ms;
      for (int i = 0; i < 10; ++i) {
        const auto s0 = std::chrono::steady_clock::now();
        if (absl::StatusOr<StepResult> r = run_step(step); !r.ok()) return r.status();
        if (i > 0) ms.push_back(1e3 * seconds_since(s0));
      }
      std::sort(ms.begin(), ms.end());
      return ms[ms.size() / 2];
    };
    absl::StatusOr<double> with = median_ms(true);
    if (!with.ok()) return with.status();
    absl::StatusOr<double> without = median_ms(false);
    if (!without.ok()) return without.status();
    persistent_ = *with <= *without;
    absl::StrAppend(&report_,
                    absl::StrFormat("; batch-1 decode %.3f ms with the persistent kernel, %.3f ms "
                                    "launched op by op: %s",
                                    *with, *without, persistent_ ? "persistent" : "op by op"));
  }
  absl::StrAppend(&report_, "; warm-up ", absl::StrFormat("%.0f ms", 1e3 * seconds_since(t0)));
  return absl::OkStatus();
}

absl::Status CudaBackend::copy_kv_pages(absl::Span<const PageCopy> copies) {
  if (copies.empty()) return absl::OkStatus();
  // Any thread may drive the backend (one at a time): `kiln serve` steps on its engine thread.
  if (absl::Status s = device_->make_current(); !s.ok()) return s;
  for (const PageCopy& c : copies) {
    if (c.src < 0 || c.src >= kv_pages_ || c.dst < 0 || c.dst >= kv_pages_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KV page copy ", c.src, " -> ", c.dst, " is outside the pool of ", kv_pages_, " pages"));
    }
    // A page's scales (fp8e4m3) go with its codes: the copy-on-write copy of a shared partly
    // filled page must dequantize exactly as the page it was copied from.
    for (int64_t half = 0; half < 2 * kv_layers_; ++half) {
      for (auto [base, bytes] : {std::pair{kv_array(half, false), kv_page_bytes_},
                                 std::pair{kv_array(half, true), kv_scale_page_bytes_}}) {
        if (bytes == 0) continue;
        if (absl::Status s = device_->copy_async(base + c.dst * bytes, base + c.src * bytes, bytes);
            !s.ok()) {
          return s;
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::stage_inputs(const StepRequest& step) {
  const StepInputs& in = step.inputs;
  const StepMetadata& m = in.metadata;
  const int64_t T = in.num_tokens(), S = in.num_sequences();
  const int64_t P = static_cast<int64_t>(m.kv_page_indices.size());
  const int64_t ps = plan_.kv.page_size;
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (T < 1 || S < 1) return bad("a step needs at least one token and one sequence");
  if (static_cast<int64_t>(m.positions.size()) != T ||
      static_cast<int64_t>(m.slot_mapping.size()) != T) {
    return bad(
        "step inputs: positions and slot_mapping must have one entry "
        "per token (",
        T, ")");
  }
  if (static_cast<int64_t>(m.qo_indptr.size()) != S + 1 ||
      static_cast<int64_t>(m.kv_page_indptr.size()) != S + 1) {
    return bad("step inputs: qo_indptr and kv_page_indptr must have S + 1 = ", S + 1, " entries");
  }
  if (static_cast<int64_t>(step.sampling.size()) != S) {
    return bad("step has ", S, " sequences but ", step.sampling.size(), " sampling settings");
  }
  if (m.qo_indptr[0] != 0 || m.qo_indptr[S] != T || m.kv_page_indptr[0] != 0 ||
      m.kv_page_indptr[S] != P) {
    return bad(
        "step inputs: qo_indptr must run from 0 to T and kv_page_indptr "
        "from 0 to P");
  }
  int32_t max_kv = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int32_t q = m.qo_indptr[s + 1] - m.qo_indptr[s];
    const int32_t pages = m.kv_page_indptr[s + 1] - m.kv_page_indptr[s];
    if (q < 1 || pages < 1 || m.kv_last_page_len[s] < 1 || m.kv_last_page_len[s] > ps) {
      return bad("step inputs: sequence ", s, " has ", q, " query tokens, ", pages,
                 " pages and a last page of ", m.kv_last_page_len[s], " tokens");
    }
    const int32_t kv_len = (pages - 1) * static_cast<int32_t>(ps) + m.kv_last_page_len[s];
    if (kv_len < q) return bad("step inputs: sequence ", s, " has fewer KV rows than queries");
    max_kv = std::max(max_kv, kv_len);
  }
  for (int32_t p : m.kv_page_indices) {
    if (p < 0 || p >= kv_pages_)
      return bad("step inputs: KV page ", p, " is outside the pool of ", kv_pages_, " pages");
  }
  for (int32_t slot : m.slot_mapping) {
    if (slot < 0 || slot >= kv_pages_ * ps) {
      return bad("step inputs: slot ", slot, " is outside the pool of ", kv_pages_ * ps, " slots");
    }
  }
  for (int32_t t : in.tokens) {
    if (t < 0 || t >= vocab_) return bad("token id ", t, " is outside the vocabulary of ", vocab_);
  }
  // A decode step's shared-prefix layout, when the plan has the cascade launches: checked against
  // the step (the kernels index pages and sequences through it), then bound as symbols and
  // uploaded with the other inputs.
  cascade_step_ = false;
  const CascadeLayout* cascade = nullptr;
  int32_t longest_suffix = 0;
  if (in.cascade && in.is_decode() && !plan_.cascades.empty()) {
    if (absl::Status s = check_cascade_layout(*in.cascade, m, static_cast<int32_t>(ps)); !s.ok()) {
      return s;
    }
    cascade = &*in.cascade;
    cascade_step_ = true;
    for (int64_t s = 0; s < S; ++s) {
      const int32_t kv_len =
          (m.kv_page_indptr[s + 1] - m.kv_page_indptr[s] - 1) * static_cast<int32_t>(ps) +
          m.kv_last_page_len[s];
      longest_suffix = std::max(longest_suffix, kv_len - cascade->kv_start[s]);
    }
  }
  symbols_ = {{"T", T},
              {"S", S},
              {"P", P},
              {"K", std::max<int32_t>(max_kv, m.max_kv_len)},
              {"NP", kv_pages_},
              {kCascadeMembersSymbol, cascade ? cascade->num_members() : 0},
              {kCascadePrefixSymbol, cascade ? cascade->prefix_len : 0},
              {kCascadeSuffixSymbol, longest_suffix}};
  for (const auto& [name, value] : symbols_) {
    for (const auto& [bname, bound] : symbol_bounds_) {
      if (bname == name && value > bound) {
        return absl::OutOfRangeError(absl::StrCat("the step has ", name, " = ", value,
                                                  ", above the plan's bound of ", bound,
                                                  " (recompile with larger step limits)"));
      }
    }
  }
  auto put = [&](StepArray a, const void* src, int64_t n) -> absl::Status {
    const InputRegion& r = regions_[static_cast<size_t>(a)];
    if (n > r.capacity) {
      return absl::OutOfRangeError(
          absl::StrCat("step input of ", n, " elements exceeds the plan's bound of ", r.capacity));
    }
    if (n > 0) std::memcpy(static_cast<char*>(host_inputs_) + r.offset, src, 4 * n);
    return absl::OkStatus();
  };
  std::vector<float> temp(S), top_p(S), uniform(S);
  std::vector<int32_t> top_k(S);
  for (int64_t s = 0; s < S; ++s) {
    temp[s] = step.sampling[s].temperature;
    top_k[s] = step.sampling[s].top_k;
    top_p[s] = step.sampling[s].top_p;
    uniform[s] = step.sampling[s].uniform;
  }
  for (auto [a, src, n] :
       {std::tuple{StepArray::kTokens, static_cast<const void*>(in.tokens.data()), T},
        std::tuple{StepArray::kPositions, static_cast<const void*>(m.positions.data()), T},
        std::tuple{StepArray::kSlotMapping, static_cast<const void*>(m.slot_mapping.data()), T},
        std::tuple{StepArray::kQoIndptr, static_cast<const void*>(m.qo_indptr.data()), S + 1},
        std::tuple{StepArray::kKvPageIndptr, static_cast<const void*>(m.kv_page_indptr.data()),
                   S + 1},
        std::tuple{StepArray::kKvLastPageLen, static_cast<const void*>(m.kv_last_page_len.data()),
                   S},
        std::tuple{StepArray::kTemperature, static_cast<const void*>(temp.data()), S},
        std::tuple{StepArray::kTopK, static_cast<const void*>(top_k.data()), S},
        std::tuple{StepArray::kTopP, static_cast<const void*>(top_p.data()), S},
        std::tuple{StepArray::kUniform, static_cast<const void*>(uniform.data()), S},
        std::tuple{StepArray::kCascadePrefixSeqs,
                   static_cast<const void*>(cascade ? cascade->prefix_seqs.data() : nullptr),
                   cascade ? int64_t{cascade->num_members()} : 0},
        std::tuple{StepArray::kCascadePrefixPages,
                   static_cast<const void*>(cascade ? cascade->prefix_pages.data() : nullptr),
                   cascade ? static_cast<int64_t>(cascade->prefix_pages.size()) : 0},
        std::tuple{StepArray::kCascadeKvStart,
                   static_cast<const void*>(cascade ? cascade->kv_start.data() : nullptr),
                   cascade ? S : 0},
        std::tuple{StepArray::kKvPageIndices, static_cast<const void*>(m.kv_page_indices.data()),
                   P}}) {
    if (absl::Status s = put(a, src, n); !s.ok()) return s;
  }
  staged_bytes_ = regions_[static_cast<size_t>(StepArray::kKvPageIndices)].offset + 4 * P;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> CudaBackend::launch_signature(bool decode) const {
  // Each distinct expression is evaluated once per step (a decode step of a 30-layer model has
  // ~450 ops but a few dozen distinct expressions; parsing them all cost ~1 ms a step).
  std::vector<int64_t> values(exprs_.size());
  std::vector<bool> done(exprs_.size(), false);
  std::vector<int64_t> sig;
  auto value = [&](const Op& op, int id) -> absl::StatusOr<int64_t> {
    if (!done[id]) {
      absl::StatusOr<int64_t> v = eval_launch_expr(exprs_[id], symbols_);
      if (!v.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(op.label, ": ", v.status().message()));
      }
      values[id] = *v;
      done[id] = true;
    }
    return values[id];
  };
  // Which of the two forms of a persistent plan's decode step runs is part of the key, and so is
  // whether the step runs cascade attention (the layout's shape is in the cascade launches'
  // grids and integer arguments: members, prefix length, split counts).
  sig.push_back(persistent_step_);
  sig.push_back(cascade_step_);
  for (const Op& op : ops_) {
    if (!step_kind_admits(op, decode)) continue;
    if (op.persistent_kernel != persistent_step_ && (op.persistent_kernel || op.persistent_stage)) {
      continue;
    }
    if (op.bound_expr >= 0) {
      // The bound's value is part of the key, so which of two bounded lowerings ran is too.
      absl::StatusOr<int64_t> v = value(op, op.bound_expr);
      if (!v.ok()) return v.status();
      sig.push_back(*v);
      if (!bound_admits(*op.bound, *v)) continue;
    }
    for (int id : op.exprs) {
      absl::StatusOr<int64_t> v = value(op, id);
      if (!v.ok()) return v.status();
      sig.push_back(*v);
    }
  }
  return sig;
}

bool CudaBackend::step_kind_admits(const Op& op, bool decode) const {
  // A cascade step runs a PlanCascade's prefix and suffix launches in place of its plain decode.
  if (op.when == StepKind::kCascade) return cascade_step_;
  if (op.cascade_replaced && cascade_step_) return false;
  return launch_runs_in(op.when, !decode);
}

absl::StatusOr<bool> CudaBackend::op_runs(const Op& op, bool decode) const {
  if (!step_kind_admits(op, decode)) return false;
  // In a step the persistent decode kernel covers it runs and its stages do not; in others the
  // reverse (persistent_step_ is set per step from the kernel's own rule).
  if (op.persistent_kernel) return persistent_step_;
  if (op.persistent_stage && persistent_step_) return false;
  if (op.bound_expr < 0) return true;
  absl::StatusOr<int64_t> v = eval_launch_expr(op.bound->expr, symbols_);
  if (!v.ok()) return absl::InvalidArgumentError(absl::StrCat(op.label, ": ", v.status().message()));
  return bound_admits(*op.bound, *v);
}

absl::Status CudaBackend::enqueue_ops(bool decode, bool checked, NodeObserver* observer) {
  int launches = 0;
  // With an observer: the node whose ops are being enqueued (ops_ is in node order), told to the
  // observer when its first op is about to run and when its last one finished.
  const Node* open_node = nullptr;
  auto close_node = [&]() -> absl::Status {
    if (open_node == nullptr) return absl::OkStatus();
    const Node* n = open_node;
    open_node = nullptr;
    return observer->after(*n);
  };
  if (observer != nullptr) checked = true;
  // With an observer, each arena value is poisoned (0xFF) again just before the node that defines
  // it, unless a launch of this step already bound it (a neighbour's fused kernel writing it
  // early, as rope_kv_append writes the k rope's result): the arena reuses a dead value's bytes,
  // so poisoning once per step would let a value no launch writes (the rmsnorm a GEMV does in its
  // prologue) read back as whatever last lived there instead of as NaN.
  std::set<std::string> bound_this_step;
  int poisoned_through = -1;  // buffers defined at nodes <= this one are poisoned
  auto poison_through = [&](int node) -> absl::Status {
    for (const MemoryPlan::Buffer& buf : plan_.memory->buffers) {
      if (buf.first_use <= poisoned_through || buf.first_use > node || !buf.alias_of.empty() ||
          bound_this_step.count(buf.value)) {
        continue;
      }
      if (absl::Status s = device_->fill_bytes(arena_.ptr() + buf.offset, 0xFF, buf.size);
          !s.ok()) {
        return s;
      }
    }
    poisoned_through = std::max(poisoned_through, node);
    return absl::OkStatus();
  };
  for (const Op& op : ops_) {
    absl::StatusOr<bool> runs = op_runs(op, decode);
    if (!runs.ok()) return runs.status();
    if (!*runs) continue;
    ++launches;
    if (observer != nullptr) {
      const Node* n = op.node >= 0 && op.node < graph_->num_nodes() ? graph_->nodes()[op.node].get()
                                                                     : nullptr;
      if (n != open_node) {
        if (absl::Status s = close_node(); !s.ok()) return s;
        if (n != nullptr) {
          if (absl::Status s = poison_through(op.node); !s.ok()) return s;
          if (absl::Status s = observer->before(*n); !s.ok()) return s;
          open_node = n;
        }
      }
      if (op.launch != nullptr) {
        for (const LaunchArg& a : op.launch->args) {
          if (a.kind == LaunchArg::Kind::kTensor) bound_this_step.insert(a.value);
        }
      }
    }
    if (op.collective != nullptr) {
      if (absl::Status s = run_collective(*op.collective); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat(op.label, ": ", s.message()));
      }
    } else if (op.gemm != nullptr) {
      absl::StatusOr<int64_t> m = eval_launch_expr(op.gemm->m, symbols_);
      if (!m.ok())
        return absl::InvalidArgumentError(absl::StrCat(op.label, ": ", m.status().message()));
      GemmShape shape = op.shape;
      shape.m = *m;
      if (absl::Status s = gemm_->run(shape, op.operands, device_->stream()); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat(op.label, ": ", s.message()));
      }
    } else {
      absl::StatusOr<LaunchGeometry> g = eval_launch_rule(op.launch->rule, symbols_);
      if (!g.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(op.label, ": ", g.status().message()));
      }
      LaunchDims dims;
      for (int a = 0; a < 3; ++a) {
        dims.grid[a] = static_cast<unsigned>(g->grid[a]);
        dims.block[a] = static_cast<unsigned>(g->block[a]);
      }
      if (op.persistent_kernel) {  // every block resident (prepare_persistent)
        dims.grid[0] = static_cast<unsigned>(persistent_blocks_);
        dims.grid[1] = dims.grid[2] = 1;
      }
      dims.dynamic_smem = static_cast<size_t>(g->dynamic_shared_bytes);
      Resolver resolver(*this);
      absl::StatusOr<std::vector<BoundArg>> bound =
          bind_launch(plan_.kernels[op.kernel], *op.launch, symbols_, resolver);
      if (!bound.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(op.label, ": ", bound.status().message()));
      }
      KernelArgs args;
      for (const BoundArg& a : *bound) {
        switch (a.type) {
          case ParamType::kPointer: args.ptr(a.pointer); break;
          case ParamType::kI32: args.i32(static_cast<int32_t>(a.integer)); break;
          case ParamType::kI64: args.i64(a.integer); break;
          case ParamType::kF32: args.f32(a.real); break;
        }
      }
      if (absl::Status s = device_->launch(kernels_[op.kernel], dims, args); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat(op.label, ": ", s.message()));
      }
    }
    if (checked) {
      if (absl::Status s = device_->synchronize(); !s.ok()) {
        return absl::Status(
            s.code(), absl::StrCat(op.label, " failed on the GPU (--debug-sync): ", s.message()));
      }
    }
  }
  if (observer != nullptr) {
    if (absl::Status s = close_node(); !s.ok()) return s;
  }
  last_step_.launches = launches;
  return absl::OkStatus();
}

absl::Status CudaBackend::run_collective(const PlanCollective& c) {
  absl::StatusOr<int64_t> outer = eval_launch_expr(c.outer, symbols_);
  if (!outer.ok()) return outer.status();
  absl::StatusOr<DevicePtr> in = address(c.in), out = address(c.out);
  if (!in.ok()) return in.status();
  if (!out.ok()) return out.status();
  const size_t count = static_cast<size_t>(*outer * c.inner);
  if (c.kind == CollectiveKind::kAllReduce) {
    return tp_.nccl->all_reduce_sum(*tp_.comm, *in, *out, count, c.dtype, device_->stream());
  }
  if (*outer == 1) {  // one row per rank: NCCL's rank-major result is the concatenation
    return tp_.nccl->all_gather(*tp_.comm, *in, *out, count, c.dtype, device_->stream());
  }
  // Several rows (the logits of S sequences): gather rank-major into scratch, then move each
  // rank's row o to out[(o * ranks + r) * inner].
  if (absl::Status s = tp_.nccl->all_gather(*tp_.comm, *in, gather_rows_.ptr(), count, c.dtype,
                                            device_->stream());
      !s.ok()) {
    return s;
  }
  const int64_t row = c.inner * elem_bytes(c.dtype);
  for (int64_t r = 0; r < plan_.ranks; ++r) {
    for (int64_t o = 0; o < *outer; ++o) {
      const DevicePtr src = gather_rows_.ptr() + (r * *outer + o) * row;
      const DevicePtr dst = *out + (o * plan_.ranks + r) * row;
      if (absl::Status s = device_->copy_async(dst, src, row); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<StepResult> CudaBackend::run_step(const StepRequest& step) {
  return run_step_impl(step, nullptr);
}

absl::StatusOr<StepResult> CudaBackend::run_step_observed(const StepRequest& step,
                                                          NodeObserver& observer) {
  if (absl::Status s = device_->make_current(); !s.ok()) return s;
  if (arena_.bytes() > 0) {
    if (absl::Status s = device_->fill_bytes(arena_.ptr(), 0xFF, arena_.bytes()); !s.ok()) return s;
  }
  return run_step_impl(step, &observer);
}

absl::StatusOr<HostTensor> CudaBackend::download_value(const Value& value) {
  if (absl::Status s = device_->make_current(); !s.ok()) return s;
  if (value_names_ == nullptr) value_names_ = std::make_unique<ValueNames>(*graph_);
  const std::string name = (*value_names_)(&value);
  absl::StatusOr<DevicePtr> ptr = address(name);
  if (!ptr.ok()) return ptr.status();
  absl::StatusOr<std::vector<int64_t>> shape = step_symbols().resolve(value.type.shape);
  if (!shape.ok()) {
    return absl::Status(shape.status().code(),
                        absl::StrCat(name, ": ", shape.status().message()));
  }
  const int64_t n = num_elements(*shape);
  const DType dt = value.type.dtype;
  HostTensor t;
  t.dtype = dt;
  t.shape = *shape;
  if (dt != DType::kI32 && dt != DType::kF32 && dt != DType::kBF16 && dt != DType::kF16 &&
      dt != DType::kFP8E4M3) {
    return absl::UnimplementedError(
        absl::StrCat(name, ": reading back a ", dtype_name(dt), " value is not supported"));
  }
  // The value's elements in order: one copy when contiguous, its rows gathered when it is a
  // strided view (a slice of a merged GEMM's result; ir/view.h).
  const int64_t eb = block_bytes(dt);
  auto download = [&](void* dst) -> absl::Status {
    std::optional<StridedRows> view = strided_rows(value);
    const int64_t rows = shape->empty() ? 1 : (*shape)[0];
    if (!view || view->contiguous() || rows <= 1 || n == 0) {
      return device_->download(dst, *ptr, eb * n);
    }
    const int64_t width = n / rows;
    std::vector<uint8_t> span(eb * ((rows - 1) * view->row_stride + width));
    if (absl::Status s = device_->download(span.data(), *ptr, span.size()); !s.ok()) return s;
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(static_cast<uint8_t*>(dst) + r * width * eb,
                  span.data() + r * view->row_stride * eb, width * eb);
    }
    return absl::OkStatus();
  };
  if (dt == DType::kI32) {
    t.i.resize(n);
    if (absl::Status s = download(t.i.data()); !s.ok()) return s;
    return t;
  }
  t.f.resize(n);
  if (dt == DType::kF32) {
    if (absl::Status s = download(t.f.data()); !s.ok()) return s;
    return t;
  }
  if (dt == DType::kFP8E4M3) {  // an fp8e4m3 cache: its codes' values (scales are f32 values)
    std::vector<uint8_t> codes(n);
    if (absl::Status s = download(codes.data()); !s.ok()) return s;
    for (int64_t k = 0; k < n; ++k) t.f[k] = fp8e4m3_to_f32(codes[k]);
    return t;
  }
  std::vector<uint16_t> half(n);
  if (absl::Status s = download(half.data()); !s.ok()) return s;
  for (int64_t k = 0; k < n; ++k) {
    t.f[k] = dt == DType::kBF16 ? bf16_to_f32(half[k]) : f16_to_f32(half[k]);
  }
  return t;
}

absl::StatusOr<StepResult> CudaBackend::run_step_impl(const StepRequest& step,
                                                      NodeObserver* observer) {
  last_step_ = {};
  if (absl::Status s = device_->make_current(); !s.ok()) return s;  // see copy_kv_pages
  if (absl::Status s = stage_inputs(step); !s.ok()) return s;
  const bool decode = step.inputs.is_decode();
  // The persistent decode kernel runs when the plan has it, it is on, the step is not checked
  // node by node, and its rule admits the step (a decode step of few enough sequences).
  persistent_step_ = false;
  // A cascade step launches its stages (the persistent kernel has no cascade tasks).
  if (persistent_ && observer == nullptr && decode && !cascade_step_) {
    for (const Op& op : ops_) {
      if (!op.persistent_kernel) continue;
      absl::StatusOr<int64_t> v = eval_launch_expr(op.bound->expr, symbols_);
      if (!v.ok()) return v.status();
      persistent_step_ = bound_admits(*op.bound, *v);
    }
  }
  last_step_.persistent = persistent_step_;
  last_step_.cascade = cascade_step_;
  const int64_t S = step.inputs.num_sequences();
  if (absl::Status s = device_->upload_async(inputs_.ptr(), host_inputs_, staged_bytes_); !s.ok()) {
    return s;
  }
  bool ran = false;
  if (decode && cuda_graphs_ && observer == nullptr) {
    absl::StatusOr<std::vector<int64_t>> sig = launch_signature(true);
    if (!sig.ok()) return sig.status();
    auto it = graphs_.find(*sig);
    if (it == graphs_.end() && graphs_.size() < kMaxGraphs) {
      if (absl::Status s = device_->begin_capture(); !s.ok()) return s;
      absl::Status run = enqueue_ops(true, false);
      absl::StatusOr<void*> exec = device_->end_capture();
      if (!run.ok()) {
        if (exec.ok()) device_->destroy_graph(*exec);
        return run;
      }
      if (!exec.ok()) return exec.status();
      it = graphs_.emplace(*sig, *exec).first;
      last_step_.graph_captured = true;
    }
    if (it != graphs_.end()) {
      const int launches = last_step_.launches;
      if (absl::Status s = device_->replay(it->second); !s.ok()) return s;
      last_step_.graph_replay = true;
      if (launches == 0) {  // replay of a graph captured earlier: count its ops
        int n = 0;
        for (const Op& op : ops_) {
          absl::StatusOr<bool> runs = op_runs(op, /*decode=*/true);
          if (!runs.ok()) return runs.status();
          n += *runs;
        }
        last_step_.launches = n;
      }
      ran = true;
    }
  }
  if (!ran) {
    if (absl::Status s = enqueue_ops(decode, debug_sync_, observer); !s.ok()) return s;
  }
  // Only the sampled ids (and logits when asked) cross PCIe.
  if (absl::Status s = device_->download_async(host_out_, sampled_ids_, 4 * S); !s.ok()) return s;
  const size_t logits_bytes = step.return_logits ? static_cast<size_t>(4 * S * vocab_) : 0;
  char* logits_host = static_cast<char*>(host_out_) + align_up(4 * S, 16);
  if (logits_bytes > 0) {
    if (absl::Status s = device_->download_async(logits_host, logits_, logits_bytes); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = device_->synchronize(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("step failed on the GPU (run with --debug-sync to "
                                               "name the op): ",
                                               s.message()));
  }
  StepResult result;
  result.tokens.resize(S);
  std::memcpy(result.tokens.data(), host_out_, 4 * S);
  for (int64_t s = 0; s < S; ++s) {
    if (result.tokens[s] < 0 || result.tokens[s] >= vocab_) {
      return absl::InternalError(absl::StrCat("the sampling kernel returned token ",
                                              result.tokens[s], " for sequence ", s,
                                              " (the logits are likely NaN)"));
    }
  }
  if (logits_bytes > 0) {
    result.logits.resize(S * vocab_);
    std::memcpy(result.logits.data(), logits_host, logits_bytes);
  }
  return result;
}

}  // namespace kiln
