// ReferenceExecutor: binding checks, symbol resolution, buffer lifetime and the one exhaustive
// switch that maps every op kind to its CPU kernel (runtime/reference/ops.h, reference_matmul.h).
#include "runtime/reference/executor.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ir/expr.h"
#include "ir/ops.h"
#include "ir/verifier.h"
#include "runtime/reference/cascade_attention.h"
#include "runtime/reference/matmul.h"
#include "runtime/reference/ops.h"

namespace kiln {
namespace {

absl::Status invalid(auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); }

std::string dims_to_string(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

std::string value_ref(const Value* v) {
  if (v->kind == ValueKind::kParam) return absl::StrCat("@", v->name);
  return v->name.empty() ? absl::StrCat("%", v->id) : absl::StrCat("%", v->name);
}

bool is_weight_operand(const Node& n, size_t i) {
  // matmul(x, w) has no view of its own; gemm's weight sits at the same place.
  return ((n.op == OpKind::kMatmul || n.op == OpKind::kGemm) && i == GemmOp::kWeight) ||
         (n.op == OpKind::kGather && i == 0);
}


// A buffer of at least `n` elements from `spare` (the smallest that fits), or a new one.
template <typename T>
std::vector<T> take_spare(std::vector<std::vector<T>>& spare, int64_t n) {
  size_t best = spare.size();
  for (size_t k = 0; k < spare.size(); ++k) {
    if (static_cast<int64_t>(spare[k].capacity()) >= n &&
        (best == spare.size() || spare[k].capacity() < spare[best].capacity())) {
      best = k;
    }
  }
  if (best == spare.size()) return {};
  std::vector<T> v = std::move(spare[best]);
  spare[best] = std::move(spare.back());
  spare.pop_back();
  return v;
}

template <typename T>
void give_spare(std::vector<std::vector<T>>& spare, std::vector<T>&& v) {
  if (v.capacity() > 0) spare.push_back(std::move(v));
}

double now_ns() {
  return std::chrono::duration<double, std::nano>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

/// Time per op kind (matmuls by weight shape), summed over runs; see executor.h.
struct ReferenceExecutor::Profile {
  struct Entry {
    int64_t calls = 0;
    double ns = 0;
  };
  std::map<std::string, Entry> by_op;
  int64_t runs = 0;
  double run_ns = 0;  // whole run() calls: the remainder over the ops is executor overhead

  ~Profile() {
    if (runs == 0) return;
    double ops_ns = 0;
    for (const auto& [name, e] : by_op) ops_ns += e.ns;
    std::vector<std::pair<std::string, Entry>> rows(by_op.begin(), by_op.end());
    std::sort(rows.begin(), rows.end(),
              [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
    std::fprintf(stderr, "reference executor profile: %lld runs, %.3f ms per run\n",
                 static_cast<long long>(runs), run_ns / runs / 1e6);
    std::fprintf(stderr, "  %-36s %10s %12s %7s\n", "op", "calls/run", "ms/run", "share");
    for (const auto& [name, e] : rows) {
      std::fprintf(stderr, "  %-36s %10.1f %12.3f %6.1f%%\n", name.c_str(),
                   static_cast<double>(e.calls) / runs, e.ns / runs / 1e6, 100 * e.ns / run_ns);
    }
    std::fprintf(stderr, "  %-36s %10s %12.3f %6.1f%%\n", "(executor: bind, alloc, free, outputs)",
                 "", (run_ns - ops_ns) / runs / 1e6, 100 * (run_ns - ops_ns) / run_ns);
  }
};

/// Where a value's data lives during a run.
struct ReferenceExecutor::Slot {
  std::vector<int64_t> shape;
  const float* f = nullptr;          // float data (results, inputs, f32/widened params, caches)
  const int32_t* i = nullptr;        // index data
  float* cache = nullptr;            // a KV cache (the input or an in-place result aliasing it)
  const ParamView* param = nullptr;  // raw weight view (for matmul / gather)
  HostTensor owned;                  // storage of node results
};

struct ReferenceExecutor::RunState {
  std::vector<Slot> slots;
  SymbolBindings symbols;
  struct BatchEntry {
    std::vector<const Value*> key;  // qo_indptr, kv_page_indptr, kv_page_indices, kv_last_page_len
    int64_t page_size, pool_pages;
    PagedBatch batch;
  };
  std::vector<BatchEntry> batches;  // the metadata is shared by every layer: validate it once
  const CascadeLayout* cascade = nullptr;  // InputBindings::cascade

  FView fview(const Value* v) const {
    const Slot& s = slots[v->id];
    return FView{s.f, s.shape};
  }
  IView iview(const Value* v) const {
    const Slot& s = slots[v->id];
    return IView{s.i, s.shape};
  }
  /// The cache `v`, with its scale array `scales` (an fp8e4m3 cache's; null for others).
  KvCacheView cache(const Value* v, const Value* scales = nullptr) const {
    const Slot& s = slots[v->id];
    return KvCacheView{s.cache, s.shape, scales != nullptr ? slots[scales->id].cache : nullptr};
  }
};

ReferenceExecutor::~ReferenceExecutor() = default;

bool is_kv_cache_operand(const Node& n, size_t i) {
  switch (n.op) {
    case OpKind::kKvWrite: return i == KvWriteOp::kCache || i == KvWriteOp::kScales;
    case OpKind::kPagedQk: return i == PagedQkOp::kKCache || i == PagedQkOp::kKScales;
    case OpKind::kPagedPv: return i == PagedPvOp::kVCache || i == PagedPvOp::kVScales;
    case OpKind::kFlashAttention:
      return i == FlashAttentionOp::kKCache || i == FlashAttentionOp::kVCache ||
             i == FlashAttentionOp::kKScales || i == FlashAttentionOp::kVScales;
    default: return false;
  }
}

absl::StatusOr<std::unique_ptr<ReferenceExecutor>> ReferenceExecutor::create(
    const Graph& graph, ParamViews params, int num_threads, bool quantize_activations) {
  if (graph.ranks() != 1) {
    return invalid("the graph runs on ", graph.ranks(),
                   " tensor-parallel ranks: bind each rank's params (create_ranks)");
  }
  std::vector<ParamViews> ranks;
  ranks.push_back(std::move(params));
  return create_ranks(graph, std::move(ranks), num_threads, quantize_activations);
}

absl::StatusOr<std::unique_ptr<ReferenceExecutor>> ReferenceExecutor::create_ranks(
    const Graph& graph, std::vector<ParamViews> rank_params, int num_threads,
    bool quantize_activations) {
  if (absl::Status s = verify(graph); !s.ok()) return s;
  if (static_cast<int>(rank_params.size()) != graph.ranks()) {
    return invalid("the graph runs on ", graph.ranks(), " rank(s) but ", rank_params.size(),
                   " param sets are bound");
  }
  std::unique_ptr<ReferenceExecutor> ex(new ReferenceExecutor());
  ex->graph_ = graph.clone();
  ex->params_ = std::move(rank_params);
  const Graph& g = *ex->graph_;

  int num_values = 0;
  auto see = [&](const Value* v) { num_values = std::max(num_values, v->id + 1); };
  for (const Value* v : g.inputs()) see(v);
  for (const Value* v : g.params()) see(v);
  for (const auto& n : g.nodes()) {
    for (const Value* v : n->outputs) see(v);
  }
  ex->last_use_.assign(num_values, -1);
  ex->is_cache_input_.assign(num_values, false);
  ex->is_output_.assign(num_values, false);
  ex->widened_params_.assign(ex->params_.size(), std::vector<HostTensor>(num_values));
  std::vector<bool> read_elementwise(num_values, false);
  for (int idx = 0; idx < g.num_nodes(); ++idx) {
    const Node& n = *g.nodes()[idx];
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      const Value* v = n.inputs[i];
      ex->last_use_[v->id] = idx;
      if (!is_weight_operand(n, i)) read_elementwise[v->id] = true;
      if (is_kv_cache_operand(n, i) && v->kind == ValueKind::kInput) ex->is_cache_input_[v->id] = true;
    }
  }
  for (const GraphOutput& o : g.outputs()) ex->is_output_[o.value->id] = true;

  for (size_t rank = 0; rank < ex->params_.size(); ++rank) {
    const ParamViews& params = ex->params_[rank];
    // "param @w" alone for one rank; "rank 1: param @w" for a tensor-parallel graph.
    const std::string who = g.ranks() > 1 ? absl::StrCat("rank ", rank, ": param @") : "param @";
    for (const Value* p : g.params()) {
      auto it = params.find(p->name);
      if (it == params.end()) {
        return absl::NotFoundError(
            absl::StrCat(who, p->name, " (", p->type.to_string(), ") is not bound"));
      }
      const ParamView& view = it->second;
      if (p->type.dtype != DType::kF32 && p->type.dtype != DType::kBF16 &&
          p->type.dtype != DType::kF16) {
        return invalid(who, p->name, ": dtype ", dtype_name(p->type.dtype),
                       " is not supported by the reference backend (f32, bf16, f16)");
      }
      // A float param may be bound to its GGUF blocks as stored (--weights-dtype native): matmul
      // and gather read them block-wise; other readers get an f32 copy made once, below.
      const bool stored_blocks = is_quantized(view.dtype);
      if (view.dtype != p->type.dtype && !stored_blocks) {
        return invalid(who, p->name, " is bound as ", dtype_name(view.dtype),
                       " but the graph declares ", p->type.to_string());
      }
      std::vector<int64_t> declared;
      for (const Dim& d : p->type.shape) {
        if (d.is_symbolic()) return invalid(who, p->name, " has a symbolic shape");
        declared.push_back(d.value);
      }
      if (view.shape != declared) {
        return invalid(who, p->name, " is bound with shape ", dims_to_string(view.shape),
                       " but the graph declares ", p->type.to_string());
      }
      if (view.data == nullptr && num_elements(declared) > 0) {
        return invalid(who, p->name, " is bound to null data");
      }
      if (stored_blocks &&
          (declared.empty() || declared.back() % block_elements(view.dtype) != 0)) {
        return invalid(who, p->name, " ", p->type.to_string(), " is bound as ",
                       dtype_name(view.dtype), " blocks of ", block_elements(view.dtype),
                       " values, which do not tile its rows");
      }
      if (view.dtype != DType::kF32 && read_elementwise[p->id]) {
        // Small weights read elementwise (norm weights, biases): widen once, not every step.
        HostTensor& w = ex->widened_params_[rank][p->id];
        w.shape = declared;
        w.f.resize(num_elements(declared));
        widen_to_f32(view.dtype, view.data, 0, w.numel(), w.f.data());
      }
    }
    for (const auto& [name, view] : params) {
      if (g.find_param(name) == nullptr) return invalid("binding for unknown ", who, name);
    }
  }
  ex->pool_ = std::make_unique<ThreadPool>(num_threads);
  ex->quantize_activations_ = quantize_activations;
  if (const char* p = std::getenv("KILN_REFERENCE_PROFILE"); p != nullptr && p[0] == '1') {
    ex->profile_ = std::make_unique<Profile>();
  }
  return ex;
}

absl::Status ReferenceExecutor::bind_inputs(const InputBindings& in, RunState& st) const {
  const Graph& g = *graph_;
  st.symbols = in.symbols;
  st.cascade = in.cascade;
  for (const auto& [name, t] : in.tensors) {
    if (g.find_input(name) == nullptr) return invalid("binding for unknown input %", name);
  }
  for (const auto& [name, c] : in.caches) {
    if (g.find_input(name) == nullptr) return invalid("cache binding for unknown input %", name);
  }
  // First pass: find each input's actual shape and derive unbound symbols from it.
  std::vector<std::vector<int64_t>> actual(g.inputs().size());
  for (size_t k = 0; k < g.inputs().size(); ++k) {
    const Value* v = g.inputs()[k];
    const bool cache = is_cache_input_[v->id];
    auto t = in.tensors.find(v->name);
    auto c = in.caches.find(v->name);
    if (cache) {
      if (c == in.caches.end()) {
        return absl::NotFoundError(absl::StrCat(
            "input %", v->name, " (", v->type.to_string(), ") is a KV cache and must be bound in ",
            "InputBindings::caches", t != in.tensors.end() ? ", not tensors" : ""));
      }
      if (t != in.tensors.end()) return invalid("input %", v->name, " is bound twice");
      if (c->second.data == nullptr)
        return invalid("KV cache %", v->name, " is bound to null data");
      actual[k] = c->second.shape;
    } else {
      if (t == in.tensors.end()) {
        return absl::NotFoundError(absl::StrCat(
            "input %", v->name, " (", v->type.to_string(), ") is not bound",
            c != in.caches.end() ? " (bound as a cache, but no op uses it as one)" : ""));
      }
      const HostTensor& h = t->second;
      if (h.is_index() != !is_float(v->type.dtype)) {
        return invalid("input %", v->name, " is bound as ", dtype_name(h.dtype),
                       " but the graph declares ", v->type.to_string());
      }
      const size_t stored = h.is_index() ? h.i.size() : h.f.size();
      if (static_cast<int64_t>(stored) != h.numel()) {
        return invalid("input %", v->name, ": shape ", dims_to_string(h.shape), " needs ",
                       h.numel(), " elements but ", stored, " are stored");
      }
      actual[k] = h.shape;
    }
    if (actual[k].size() != v->type.shape.size()) {
      return invalid("input %", v->name, " has rank ", actual[k].size(), " (shape ",
                     dims_to_string(actual[k]), ") but the graph declares ", v->type.to_string());
    }
    for (size_t d = 0; d < actual[k].size(); ++d) {
      const Dim& dim = v->type.shape[d];
      if (dim.is_symbolic() && !st.symbols.get(dim.symbol)) {
        st.symbols.set(dim.symbol, actual[k][d] - dim.value);
      }
    }
  }
  for (const auto& [name, value] : st.symbols.values) {
    const Symbol* sym = g.symbols().find(name);
    if (sym != nullptr && (value < 0 || value > sym->upper_bound)) {
      return invalid("symbol ", name, " = ", value, " is outside [0, ", sym->upper_bound, "]");
    }
  }
  // Second pass: every input must match its declared shape under the bindings.
  for (size_t k = 0; k < g.inputs().size(); ++k) {
    const Value* v = g.inputs()[k];
    absl::StatusOr<std::vector<int64_t>> want = st.symbols.resolve(v->type.shape);
    if (!want.ok()) return want.status();
    if (*want != actual[k]) {
      return invalid("input %", v->name, " has shape ", dims_to_string(actual[k]),
                     " but the graph declares ", v->type.to_string(), " = ", dims_to_string(*want));
    }
    Slot& s = st.slots[v->id];
    s.shape = actual[k];
    if (is_cache_input_[v->id]) {
      s.cache = in.caches.find(v->name)->second.data;
      s.f = s.cache;
    } else {
      const HostTensor& h = in.tensors.find(v->name)->second;
      if (h.is_index()) {
        s.i = h.i.data();
      } else {
        s.f = h.f.data();
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ReferenceExecutor::bind_params(int rank, RunState& st) const {
  for (const Value* p : graph_->params()) {
    Slot& s = st.slots[p->id];
    const ParamView& view = params_[rank].find(p->name)->second;
    s.shape = view.shape;
    s.param = &view;
    if (view.dtype == DType::kF32) {
      s.f = static_cast<const float*>(view.data);
    } else if (!widened_params_[rank][p->id].f.empty()) {
      s.f = widened_params_[rank][p->id].f.data();
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<HostTensor>> ReferenceExecutor::run(const InputBindings& inputs) {
  if (graph_->ranks() != 1) {
    return invalid("the graph runs on ", graph_->ranks(),
                   " tensor-parallel ranks: bind each rank's inputs (run_ranks)");
  }
  return run_ranks(absl::MakeConstSpan(&inputs, 1));
}

absl::StatusOr<std::vector<HostTensor>> ReferenceExecutor::run_ranks(
    absl::Span<const InputBindings> rank_inputs) {
  const double t_run = profile_ ? now_ns() : 0;
  const Graph& g = *graph_;
  const int ranks = g.ranks();
  if (static_cast<int>(rank_inputs.size()) != ranks) {
    return invalid("the graph runs on ", ranks, " rank(s) but ", rank_inputs.size(),
                   " input sets are bound");
  }
  std::vector<RunState> states(ranks);
  auto recycle = [&](Slot& s) {
    give_spare(spare_f_, std::move(s.owned.f));
    give_spare(spare_i_, std::move(s.owned.i));
    s = Slot();
  };
  auto recycle_all = [&] {
    for (RunState& st : states) {
      for (Slot& s : st.slots) recycle(s);
    }
  };
  for (int r = 0; r < ranks; ++r) {
    RunState& st = states[r];
    st.slots.resize(last_use_.size());
    if (absl::Status s = bind_params(r, st); !s.ok()) return s;
    if (absl::Status s = bind_inputs(rank_inputs[r], st); !s.ok()) {
      return ranks > 1 ? absl::Status(s.code(), absl::StrCat("rank ", r, ": ", s.message())) : s;
    }
  }

  for (int idx = 0; idx < g.num_nodes(); ++idx) {
    const Node& node = *g.nodes()[idx];
    const double t_node = profile_ ? now_ns() : 0;
    absl::Status status;
    if (op_traits(node.op).collective) {
      status = collective(node, states);
    } else {
      for (int r = 0; r < ranks && status.ok(); ++r) {
        status = execute(node, states[r]);
        if (!status.ok() && ranks > 1) {
          status = absl::Status(status.code(), absl::StrCat("rank ", r, ": ", status.message()));
        }
      }
    }
    if (profile_) {
      std::string key = op_name(node.op);
      if (node.op == OpKind::kMatmul || node.op == OpKind::kGemm) {
        const Slot& w = states[0].slots[node.inputs[GemmOp::kWeight]->id];
        absl::StrAppend(&key, " ", dims_to_string(w.shape), " ",
                        dtype_name(w.param != nullptr ? w.param->dtype : DType::kF32));
      }
      Profile::Entry& e = profile_->by_op[key];
      ++e.calls;
      e.ns += now_ns() - t_node;
    }
    if (absl::Status s = std::move(status); !s.ok()) {
      recycle_all();
      std::string outs;
      for (const Value* o : node.outputs)
        absl::StrAppend(&outs, outs.empty() ? "" : ", ", value_ref(o));
      return absl::Status(s.code(), absl::StrCat(outs, " = ", op_name(node.op), ": ", s.message()));
    }
    // Free what no later node reads (keeps the footprint at the live set, not the whole graph).
    for (RunState& st : states) {
      auto release = [&](const Value* v) {
        if (v->kind == ValueKind::kResult && last_use_[v->id] <= idx && !is_output_[v->id]) {
          recycle(st.slots[v->id]);
        }
      };
      for (const Value* v : node.inputs) release(v);
      for (const Value* v : node.outputs) release(v);
    }
  }

  // Rank 0's outputs: after the collectives every rank holds the same logits.
  RunState& st = states[0];
  std::vector<HostTensor> out;
  for (const GraphOutput& o : g.outputs()) {
    const Slot& s = st.slots[o.value->id];
    HostTensor t;
    t.dtype = o.value->type.dtype;
    t.shape = s.shape;
    const int64_t n = t.numel();
    if (t.is_index()) {
      t.i.assign(s.i, s.i + n);
    } else if (s.f != nullptr && s.owned.f.data() == s.f &&
               static_cast<int64_t>(s.owned.f.size()) == n) {
      t.f = std::move(s.owned.f);  // hand over the result buffer (the logits) instead of copying
    } else if (s.f != nullptr) {
      t.f.assign(s.f, s.f + n);
    } else {  // a bf16/f16 param output directly
      t.f.resize(n);
      widen_to_f32(s.param->dtype, s.param->data, 0, n, t.f.data());
    }
    out.push_back(std::move(t));
  }
  recycle_all();
  if (profile_) {
    ++profile_->runs;
    profile_->run_ns += now_ns() - t_run;
  }
  return out;
}

float* ReferenceExecutor::alloc_floats(RunState& st, const Value* v) {
  Slot& s = st.slots[v->id];
  HostTensor& h = s.owned;
  h.dtype = v->type.dtype;
  h.shape = s.shape;
  if (h.f.capacity() == 0) h.f = take_spare(spare_f_, h.numel());
  h.f.assign(h.numel(), 0.0f);
  s.f = h.f.data();
  return h.f.data();
}

absl::Status ReferenceExecutor::collective(const Node& node, std::vector<RunState>& ranks) {
  const Value* x = node.inputs[0];
  const Value* y = node.outputs[0];
  const int n = static_cast<int>(ranks.size());
  const std::vector<int64_t>& in_shape = ranks[0].slots[x->id].shape;
  const int64_t count = num_elements(in_shape);
  for (int r = 0; r < n; ++r) {
    const Slot& s = ranks[r].slots[x->id];
    if (s.f == nullptr && count > 0) {
      return invalid("input ", value_ref(x), " has no float data on rank ", r);
    }
    if (s.shape != in_shape) {
      return invalid("rank ", r, " holds ", dims_to_string(s.shape), " but rank 0 holds ",
                     dims_to_string(in_shape), ": the ranks disagree");
    }
    absl::StatusOr<std::vector<int64_t>> shape = ranks[r].symbols.resolve(y->type.shape);
    if (!shape.ok()) return shape.status();
    ranks[r].slots[y->id].shape = *shape;
  }
  if (count == 0) {  // an empty step (no rows): nothing to exchange
    for (int r = 0; r < n; ++r) alloc_floats(ranks[r], y);
    return absl::OkStatus();
  }
  if (node.op == OpKind::kAllReduce) {
    // The sum in rank order, the same on every rank (as a ring or tree all-reduce is not, in
    // general: NCCL's order differs, so the GPU's sums may differ in the last bits).
    float* first = alloc_floats(ranks[0], y);
    for (int r = 0; r < n; ++r) {
      const float* xr = ranks[r].slots[x->id].f;
      for (int64_t k = 0; k < count; ++k) first[k] += xr[k];
    }
    for (int r = 1; r < n; ++r) std::memcpy(alloc_floats(ranks[r], y), first, count * 4);
    return absl::OkStatus();
  }
  // all_gather along `axis`: each rank's block of `inner` elements per outer index.
  int64_t axis = node.attrs.int_or("axis", 0);
  if (axis < 0) axis += static_cast<int64_t>(in_shape.size());
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= in_shape[d];
  const int64_t inner = outer == 0 ? 0 : count / outer;
  float* first = alloc_floats(ranks[0], y);
  for (int64_t o = 0; o < outer; ++o) {
    for (int r = 0; r < n; ++r) {
      std::memcpy(first + (o * n + r) * inner, ranks[r].slots[x->id].f + o * inner, inner * 4);
    }
  }
  for (int r = 1; r < n; ++r) std::memcpy(alloc_floats(ranks[r], y), first, count * n * 4);
  return absl::OkStatus();
}

absl::Status ReferenceExecutor::execute(const Node& node, RunState& st) {
  const std::vector<Value*>& in = node.inputs;
  // Allocate results with their declared shapes under the current bindings. paged_qk binds its
  // kv_dim symbol first if the caller did not.
  std::optional<PagedBatch> local_batch;
  const PagedBatch* batch = nullptr;
  if (std::optional<PageTableOperands> pages = page_table_of(node)) {
    // The cache the op reads (its page geometry) and its query-side operand (the step's tokens).
    const Value* cache_v = node.op == OpKind::kFlashAttention ? FlashAttentionOp(node).k_cache()
                           : node.op == OpKind::kPagedQk      ? PagedQkOp(node).k_cache()
                                                              : PagedPvOp(node).v_cache();
    const std::vector<int64_t>& cshape = st.slots[cache_v->id].shape;
    const int64_t tokens = st.slots[in[0]->id].shape[0];  // q[T,..] or p[T,..]
    const std::array<Value*, PageTableOperands::kCount> list = pages->list();
    std::vector<const Value*> key(list.begin(), list.end());
    for (const auto& e : st.batches) {
      if (e.key == key && e.page_size == cshape[1] && e.pool_pages == cshape[0] &&
          static_cast<int64_t>(e.batch.seq_of_token.size()) == tokens) {
        batch = &e.batch;
      }
    }
    if (batch == nullptr) {
      absl::StatusOr<PagedBatch> b =
          make_paged_batch(st.iview(key[0]), st.iview(key[1]), st.iview(key[2]), st.iview(key[3]),
                           tokens, cshape[0], cshape[1]);
      if (!b.ok()) return b.status();
      st.batches.push_back({key, cshape[1], cshape[0], std::move(*b)});
      batch = &st.batches.back().batch;
    }
    if (node.op == OpKind::kPagedQk) {
      const std::string kv_dim = node.attrs.string_or("kv_dim", "K");
      std::optional<int64_t> k = st.symbols.get(kv_dim);
      if (!k) {
        const Symbol* sym = graph_->symbols().find(kv_dim);
        if (sym != nullptr && batch->max_kv_len > sym->upper_bound) {
          return invalid("longest KV length ", batch->max_kv_len, " exceeds ", kv_dim, "'s bound ",
                         sym->upper_bound);
        }
        st.symbols.set(kv_dim, batch->max_kv_len);
      } else if (*k < batch->max_kv_len) {
        return invalid("longest KV length ", batch->max_kv_len, " exceeds ", kv_dim, " = ", *k);
      }
    }
  }
  for (const Value* o : node.outputs) {
    absl::StatusOr<std::vector<int64_t>> shape = st.symbols.resolve(o->type.shape);
    if (!shape.ok()) return shape.status();
    st.slots[o->id].shape = *shape;
  }
  auto alloc = [&](int k) -> Slot& {
    Slot& s = st.slots[node.outputs[k]->id];
    HostTensor& h = s.owned;
    h.dtype = node.outputs[k]->type.dtype;
    h.shape = s.shape;
    if (h.is_index()) {
      if (h.i.capacity() == 0) h.i = take_spare(spare_i_, h.numel());
      h.i.assign(h.numel(), 0);
      s.i = h.i.data();
    } else {
      if (h.f.capacity() == 0) h.f = take_spare(spare_f_, h.numel());
      h.f.assign(h.numel(), 0.0f);
      s.f = h.f.data();
    }
    return s;
  };
  auto out_f = [&](int k) { return const_cast<float*>(alloc(k).f); };
  auto raw = [&](const Value* v) -> const void* {
    const Slot& s = st.slots[v->id];
    return s.i != nullptr ? static_cast<const void*>(s.i) : static_cast<const void*>(s.f);
  };
  auto out_raw = [&](int k) -> void* {
    Slot& s = alloc(k);
    return s.i != nullptr ? static_cast<void*>(s.owned.i.data())
                          : static_cast<void*>(s.owned.f.data());
  };
  auto weight = [&](const Value* w) {
    const Slot& s = st.slots[w->id];
    WeightRef ref;
    ref.n = s.shape[0];
    ref.k = s.shape[1];
    if (s.param != nullptr && s.param->dtype != DType::kF32) {
      ref.dtype = s.param->dtype;
      ref.data = s.param->data;
    } else {
      ref.dtype = DType::kF32;
      ref.data = s.f;
    }
    return ref;
  };
  auto run_matmul = [&](float* y) {
    const FView x = st.fview(in[0]);
    const WeightRef w = weight(in[1]);
    matmul(x.data, x.numel() / w.k, w, y, pool_.get(), MatmulIsa::kAuto, quantize_activations_);
  };

  for (size_t i = 0; i < in.size(); ++i) {
    if (is_kv_cache_operand(node, i) && st.slots[in[i]->id].cache == nullptr) {
      return invalid("input ", i, " (", value_ref(in[i]),
                     ") must be a KV cache: a graph input bound in InputBindings::caches, or a "
                     "result aliasing one");
    }
  }
  switch (node.op) {
    case OpKind::kConstant: {
      const double v = node.attrs.float_or("value", 0);
      Slot& s = alloc(0);
      if (s.i != nullptr) {
        s.owned.i[0] = static_cast<int32_t>(v);
      } else {
        s.owned.f[0] = static_cast<float>(v);
      }
      return absl::OkStatus();
    }
    case OpKind::kRopeTable: return rope_table(node.attrs, out_f(0));
    case OpKind::kGather: {
      const Slot& table = st.slots[in[0]->id];
      const int64_t rows = table.shape[0];
      const int64_t row_elems = rows == 0 ? 0 : num_elements(table.shape) / rows;
      const void* data = raw(in[0]);
      DType dt = DType::kF32;
      if (table.param != nullptr && table.param->dtype != DType::kF32) {
        data = table.param->data;
        dt = table.param->dtype;
      }
      return gather_rows(data, dt, rows, row_elems, st.iview(in[1]), out_raw(0));
    }
    case OpKind::kReshape: {
      Slot& src = st.slots[in[0]->id];
      Slot& dst = st.slots[node.outputs[0]->id];
      if (num_elements(src.shape) != num_elements(dst.shape)) {
        return invalid("reshape of ", dims_to_string(src.shape), " to ", dims_to_string(dst.shape),
                       " changes the element count");
      }
      // A reshape is a view: take the buffer when this was its last reader, copy otherwise.
      if (in[0]->kind == ValueKind::kResult && last_use_[in[0]->id] == graph_->index_of(&node) &&
          !is_output_[in[0]->id] && src.cache == nullptr) {
        std::vector<int64_t> shape = dst.shape;
        dst.owned = std::move(src.owned);
        dst.owned.shape = shape;
        dst.owned.dtype = node.outputs[0]->type.dtype;
        dst.f = dst.owned.is_index() ? nullptr : dst.owned.f.data();
        dst.i = dst.owned.is_index() ? dst.owned.i.data() : nullptr;
        src = Slot();
        return absl::OkStatus();
      }
      const void* from = raw(in[0]);
      std::memcpy(out_raw(0), from, num_elements(dst.shape) * 4);
      return absl::OkStatus();
    }
    case OpKind::kSlice: {
      const std::vector<int64_t>& shape = st.slots[in[0]->id].shape;
      int64_t axis = node.attrs.int_or("axis", 0);
      if (axis < 0) axis += static_cast<int64_t>(shape.size());
      slice(raw(in[0]), shape, static_cast<int>(axis), node.attrs.int_or("start", 0),
            node.attrs.int_or("end", 0), out_raw(0));
      return absl::OkStatus();
    }
    case OpKind::kConcat: {
      std::vector<const void*> xs;
      std::vector<std::vector<int64_t>> shapes;
      for (const Value* v : in) {
        xs.push_back(raw(v));
        shapes.push_back(st.slots[v->id].shape);
      }
      int64_t axis = node.attrs.int_or("axis", 0);
      if (axis < 0) axis += static_cast<int64_t>(shapes[0].size());
      concat(xs, shapes, static_cast<int>(axis), out_raw(0));
      return absl::OkStatus();
    }
    case OpKind::kLastTokenRows: return last_token_rows(st.fview(in[0]), st.iview(in[1]), out_f(0));
    case OpKind::kMatmul: run_matmul(out_f(0)); return absl::OkStatus();
    case OpKind::kAdd:
    case OpKind::kSub:
    case OpKind::kMul:
    case OpKind::kDiv: {
      float* y = out_f(0);
      binary_op(node.op, st.fview(in[0]), st.fview(in[1]), st.slots[node.outputs[0]->id].shape, y);
      return absl::OkStatus();
    }
    case OpKind::kNeg:
    case OpKind::kExp:
    case OpKind::kRsqrt:
    case OpKind::kSilu: {
      const FView x = st.fview(in[0]);
      unary_op(node.op, x.data, x.numel(), out_f(0));
      return absl::OkStatus();
    }
    case OpKind::kCast: {
      const Slot& x = st.slots[in[0]->id];
      Slot& y = alloc(0);
      const int64_t n = num_elements(x.shape);
      if (x.i != nullptr && y.i != nullptr) {
        std::copy(x.i, x.i + n, y.owned.i.begin());
      } else if (x.i != nullptr) {
        for (int64_t k = 0; k < n; ++k) y.owned.f[k] = static_cast<float>(x.i[k]);
      } else if (y.i != nullptr) {
        for (int64_t k = 0; k < n; ++k) {
          const float v = x.f[k];
          if (!(std::fabs(v) < 2147483648.0f)) {
            return invalid("cast of ", v, " (element ", k, ") to ", dtype_name(y.owned.dtype),
                           " overflows");
          }
          y.owned.i[k] = static_cast<int32_t>(v);  // truncation toward zero, as C and CUDA
        }
      } else {
        std::copy(x.f, x.f + n, y.owned.f.begin());  // float to float: fp32 storage throughout
      }
      return absl::OkStatus();
    }
    case OpKind::kReduceSum:
    case OpKind::kReduceMean:
    case OpKind::kReduceMax:
      reduce_last(node.op, st.fview(in[0]), out_f(0));
      return absl::OkStatus();
    case OpKind::kKvWrite: {
      const KvWriteOp op(node);
      if (absl::Status s = kv_write(st.cache(op.cache(), op.scales()), st.fview(op.rows()),
                                    st.iview(op.slot_mapping()));
          !s.ok()) {
        return s;
      }
      // The results alias the cache (and scale array) inputs, written in place.
      for (auto [out, cache] :
           {std::pair{op.cache_out(), op.cache()}, std::pair{op.scales_out(), op.scales()}}) {
        if (out == nullptr) continue;
        Slot& y = st.slots[out->id];
        y.cache = st.slots[cache->id].cache;
        y.f = y.cache;
      }
      return absl::OkStatus();
    }
    case OpKind::kPagedQk: {
      const PagedQkOp op(node);
      float* y = out_f(0);
      paged_qk(st.fview(op.q()), st.cache(op.k_cache(), op.k_scales()), *batch,
               st.slots[op.scores()->id].shape[2], y, pool_.get());
      return absl::OkStatus();
    }
    case OpKind::kCausalMask: {
      const CausalMaskOp op(node);
      return causal_mask(st.fview(op.scores()), st.iview(op.positions()), out_f(0));
    }
    case OpKind::kPagedPv: {
      const PagedPvOp op(node);
      const int64_t columns = st.slots[op.probs()->id].shape[2];
      if (batch->max_kv_len > columns) {
        return invalid("longest KV length ", batch->max_kv_len, " exceeds the probabilities' ",
                       columns, " columns");
      }
      float* y = out_f(0);
      paged_pv(st.fview(op.probs()), st.cache(op.v_cache(), op.v_scales()), *batch, y, pool_.get());
      return absl::OkStatus();
    }
    case OpKind::kRmsNorm: {
      const RmsNormOp op(node);
      float* y = out_f(0);
      rmsnorm(st.fview(op.x()), nullptr, st.fview(op.weight()).data,
              node.attrs.float_or("eps", 1e-6), y, nullptr, pool_.get());
      return absl::OkStatus();
    }
    case OpKind::kRmsNormResidual: {
      const RmsNormResidualOp op(node);
      float* y = out_f(RmsNormResidualOp::kNormed);
      float* sum = out_f(RmsNormResidualOp::kSum);
      rmsnorm(st.fview(op.x()), st.fview(op.residual()).data, st.fview(op.weight()).data,
              node.attrs.float_or("eps", 1e-6), y, sum, pool_.get());
      return absl::OkStatus();
    }
    case OpKind::kRope: {
      const RopeOp op(node);
      return rope(st.fview(op.x()), st.iview(op.positions()), node.attrs, out_f(0), pool_.get());
    }
    case OpKind::kFlashAttention: {
      const FlashAttentionOp op(node);
      float* y = out_f(FlashAttentionOp::kOutput);
      const KvCacheView k_cache = st.cache(op.k_cache(), op.k_scales());
      const KvCacheView v_cache = st.cache(op.v_cache(), op.v_scales());
      const double scale = node.attrs.float_or("scale", 1.0);
      absl::Status s;
      if (st.cascade != nullptr && st.fview(op.q()).shape[0] == batch->num_seqs) {
        // A decode step with a shared prefix: the new rows into the cache, then the prefix and
        // suffix softmaxes merged, as the GPU's cascade launches compute it.
        s = kv_write(k_cache, st.fview(op.k()), st.iview(op.slot_mapping()));
        if (s.ok()) s = kv_write(v_cache, st.fview(op.v()), st.iview(op.slot_mapping()));
        if (s.ok())
          s = cascade_attention(st.fview(op.q()), k_cache, v_cache, *batch, *st.cascade, scale, y);
      } else {
        s = flash_attention(st.fview(op.q()), st.fview(op.k()), st.fview(op.v()), k_cache, v_cache,
                            st.iview(op.positions()), st.iview(op.slot_mapping()), *batch, scale, y,
                            pool_.get());
      }
      if (!s.ok()) return s;
      // The cache (and scale array) results alias their inputs (updated in place).
      for (auto [out, cache] :
           {std::pair{op.k_cache_out(), op.k_cache()}, std::pair{op.v_cache_out(), op.v_cache()},
            std::pair{op.k_scales_out(), op.k_scales()},
            std::pair{op.v_scales_out(), op.v_scales()}}) {
        if (out == nullptr) continue;
        Slot& c = st.slots[out->id];
        c.cache = st.slots[cache->id].cache;
        c.f = c.cache;
      }
      return absl::OkStatus();
    }
    case OpKind::kFusedElementwise: {
      absl::StatusOr<Expr> expr = Expr::parse(node.attrs.string_or("expr", ""));
      if (!expr.ok()) return expr.status();
      if (expr->max_input_index() >= static_cast<int>(in.size())) {
        return invalid("expr uses $", expr->max_input_index(), " but the op has ", in.size(),
                       " inputs");
      }
      std::vector<FView> xs;
      for (const Value* v : in) xs.push_back(st.fview(v));
      float* y = out_f(0);
      fused_elementwise(*expr, xs, st.slots[node.outputs[0]->id].shape, y, pool_.get());
      return absl::OkStatus();
    }
    case OpKind::kGemm: {
      const std::optional<GemmOp> op = GemmOp::of(&node);
      if (!op) {
        return invalid("gemm epilogue '", node.attrs.string_or("epilogue", "none"),
                       "' does not match its ", in.size(), " operands");
      }
      float* y = out_f(0);
      run_matmul(y);
      const std::vector<int64_t>& shape = st.slots[op->output()->id].shape;
      const FView yv{y, shape};
      if (op->bias() != nullptr) binary_op(OpKind::kAdd, yv, st.fview(op->bias()), shape, y);
      if (op->residual() != nullptr) {
        binary_op(OpKind::kAdd, yv, st.fview(op->residual()), shape, y);
      }
      return absl::OkStatus();
    }
    case OpKind::kAllReduce:
    case OpKind::kAllGather:
      return absl::InternalError("a collective runs across the ranks (run_ranks), not per rank");
  }
  return invalid("op kind not handled by the reference backend");
}

}  // namespace kiln
