// shard-tensor-parallel: splits the primitive step graph over N tensor-parallel ranks, Megatron
// style, and inserts the collectives where the ranks meet (`kiln compile --tp N`).
//
// The result is one SPMD program (`ranks N` in the IR): every rank runs the same nodes on its own
// slice of the weights and its own KV cache, so kernels, GEMM shapes, the arena and the KV layout
// are the same on every rank and only the weights differ. A sharded param names each rank's slice
// of the checkpoint (`= shards(rows("layers.0.q_proj"[0:32]), rows("layers.0.q_proj"[32:64]))`);
// nothing is copied at compile time.
//
// The split follows from one rule, propagated through the graph (as an SPMD partitioner does):
// a matmul of a replicated activation is column-parallel (each rank computes a block of the output
// features, from a row slice of the [N, K] weight); a matmul of an activation split along its
// contraction axis is row-parallel (each rank multiplies its columns of the weight and holds a
// partial sum, which an `all_reduce` right after the matmul completes). In a Llama layer this
// makes Q/K/V and gate/up column-parallel and o_proj and down row-parallel: two all_reduces per
// layer. Attention splits by heads: the head reshape, rope, the paged KV ops and softmax all act
// per head, so they run on each rank's heads unchanged, and each rank's KV cache holds its own KV
// heads (H_kv / N). When N exceeds the KV heads (GQA, N a multiple of H_kv), each rank holds the
// one KV head its query heads read, replicated on N / H_kv ranks. Biases (Qwen2) split with the
// rows they add to.
//
// The embedding stays whole on every rank: its gather reads T rows per step, so splitting it by
// vocabulary would save memory only, at the price of a masked gather and one more all_reduce per
// step. The LM head splits by vocabulary (column-parallel; the largest matrix of the model, read
// every decode step) and an `all_gather` of the logits makes them whole on every rank, so any rank
// can sample; when N does not divide the vocabulary it stays whole on every rank instead.
//
// Runs on the primitive graph, before the fusions (which then fuse each rank's program as they
// would a smaller model's; no fusion crosses a collective). With N = 1, or on a graph already
// sharded over N ranks, it changes nothing.
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "ir/ops.h"
#include "ir/type_inference.h"
#include "passes/pass.h"
#include "passes/pass_registry.h"

namespace kiln {
namespace {

absl::Status invalid(auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); }

/// How a value is laid out over the ranks.
struct Sharding {
  enum class Kind : uint8_t {
    kReplicated,  ///< every rank holds all of it
    kSplit,       ///< dim `axis` is cut into `blocks` equal blocks; rank r holds r * blocks / N
  };
  Kind kind = Kind::kReplicated;
  int axis = 0;
  int64_t blocks = 1;
  /// The param (or KV cache input) whose slicing introduced the split: where a different block
  /// count must be chosen when a later op needs one (GQA's replicated KV heads).
  const Value* origin = nullptr;

  static Sharding replicated() { return {}; }
  static Sharding split(int axis, int64_t blocks, const Value* origin) {
    return {Kind::kSplit, axis, blocks, origin};
  }
  bool is_split() const { return kind == Kind::kSplit; }
  bool same_split(const Sharding& o) const {
    return kind == o.kind && (kind == Kind::kReplicated || (axis == o.axis && blocks == o.blocks));
  }
};

/// One use of a param that gets a per-rank slice: operand `operand` of `node` reads `param`
/// split along `axis` into `blocks` blocks.
struct ParamSplit {
  Node* node = nullptr;
  int operand = 0;
  const Value* param = nullptr;
  SliceAxis axis = SliceAxis::kRows;
  int64_t blocks = 1;
};

/// What the analysis decided; the rewrite applies it.
struct ShardPlan {
  absl::flat_hash_map<const Value*, Sharding> sharding;
  std::vector<ParamSplit> params;
  absl::flat_hash_map<const Value*, int64_t> caches;  // KV cache input -> blocks (heads axis)
  std::vector<Node*> partial;                         // row-parallel matmuls: all_reduce after
  std::vector<int> gathered_outputs;                  // graph outputs to all_gather
  int64_t whole_lm_heads = 0;
};

std::string where(const Node& n) {
  std::string outs;
  for (const Value* o : n.outputs) {
    absl::StrAppend(&outs, outs.empty() ? "" : ", ",
                    o->name.empty() ? absl::StrCat("%", o->id) : absl::StrCat("%", o->name));
  }
  return absl::StrCat(op_name(n.op), " ", outs);
}

/// Whether `v` only reaches graph outputs, through casts: the vocabulary projection's result.
bool feeds_only_outputs(const Graph& g, const Value* v) {
  for (const Node* user : g.users(v)) {
    if (user->op != OpKind::kCast || !feeds_only_outputs(g, user->outputs[0])) return false;
  }
  return true;
}

/// The per-rank slices of a tensor-parallel program over `ranks` ranks. See the file comment.
class ShardAnalysis {
 public:
  ShardAnalysis(const Graph& g, int ranks, const absl::flat_hash_map<const Value*, int64_t>& blocks)
      : g_(g), n_(ranks), blocks_override_(blocks) {}

  /// The plan, or nullopt after recording in `restart` a smaller block count some origin needs
  /// (the caller runs the analysis again with it).
  absl::StatusOr<std::optional<ShardPlan>> run(std::pair<const Value*, int64_t>* restart) {
    restart_ = restart;
    for (const auto& node : g_.nodes()) {
      if (absl::Status s = visit(*node); !s.ok()) {
        return invalid("tensor parallelism over ", n_, " ranks: ", where(*node), ": ", s.message());
      }
      if (restart_->first != nullptr) return std::nullopt;
    }
    for (size_t i = 0; i < g_.outputs().size(); ++i) {
      const GraphOutput& o = g_.outputs()[i];
      const Sharding s = of(o.value);
      if (!s.is_split()) continue;
      if (s.blocks != n_) {
        return invalid("tensor parallelism over ", n_, " ranks: output ", o.name, " is split into ",
                       s.blocks, " blocks replicated over the ranks, which an all_gather cannot "
                       "reassemble");
      }
      plan_.gathered_outputs.push_back(static_cast<int>(i));
    }
    return std::move(plan_);
  }

 private:
  Sharding of(const Value* v) const {
    auto it = plan_.sharding.find(v);
    return it == plan_.sharding.end() ? Sharding::replicated() : it->second;
  }

  int64_t blocks_for(const Value* origin) const {
    auto it = blocks_override_.find(origin);
    return it == blocks_override_.end() ? n_ : it->second;
  }

  /// Records `s` for `v` after checking that its split dim divides into the blocks.
  absl::Status set(const Value* v, Sharding s) {
    if (s.is_split()) {
      const Dim& d = v->type.shape[s.axis];
      if (d.is_symbolic() || d.value % s.blocks != 0) {
        return invalid("dim ", s.axis, " (", d.to_string(), ") of ", v->type.to_string(),
                       " does not split into ", s.blocks, " blocks");
      }
    }
    plan_.sharding[v] = s;
    return absl::OkStatus();
  }

  absl::Status split_param(Node& node, int operand, SliceAxis axis, int64_t blocks) {
    const Value* p = node.inputs[operand];
    if (p->kind != ValueKind::kParam) {
      return invalid("operand ", operand, " would need a per-rank slice, but it is computed, not a "
                     "param");
    }
    if (!p->parts.empty() || p->sharded()) {
      return invalid("param @", p->name, " is already derived from other tensors: "
                     "shard-tensor-parallel runs before fuse-horizontal");
    }
    plan_.params.push_back({&node, operand, p, axis, blocks});
    return absl::OkStatus();
  }

  absl::Status visit(const Node& cn) {
    Node& node = const_cast<Node&>(cn);  // the plan records nodes for the rewrite to edit
    const std::vector<Value*>& in = node.inputs;
    switch (node.op) {
      case OpKind::kConstant:
      case OpKind::kRopeTable: return absl::OkStatus();
      case OpKind::kGather:
        if (of(in[0]).is_split() || of(in[1]).is_split()) {
          return invalid("a gather from a split table or by split indices");
        }
        return absl::OkStatus();
      case OpKind::kReshape: return reshape(node);
      case OpKind::kSlice: {
        const Sharding s = of(in[0]);
        if (!s.is_split()) return absl::OkStatus();
        int64_t axis = node.attrs.int_or("axis", 0);
        if (axis < 0) axis += in[0]->type.rank();
        if (axis == s.axis) return invalid("a slice along the split axis ", axis);
        return set(node.outputs[0], s);
      }
      case OpKind::kConcat: {
        const Sharding s = of(in[0]);
        int64_t axis = node.attrs.int_or("axis", 0);
        if (axis < 0) axis += in[0]->type.rank();
        for (const Value* v : in) {
          if (!of(v).same_split(s)) return invalid("a concat of differently split inputs");
        }
        if (!s.is_split()) return absl::OkStatus();
        if (axis == s.axis) return invalid("a concat along the split axis ", axis);
        return set(node.outputs[0], s);
      }
      case OpKind::kLastTokenRows: {
        const Sharding s = of(in[0]);
        if (s.is_split() && s.axis == 0) return invalid("token rows split over the ranks");
        return s.is_split() ? set(node.outputs[0], s) : absl::OkStatus();
      }
      case OpKind::kMatmul: return matmul(node);
      case OpKind::kAdd:
      case OpKind::kSub:
      case OpKind::kMul:
      case OpKind::kDiv: return binary(node);
      case OpKind::kNeg:
      case OpKind::kExp:
      case OpKind::kRsqrt:
      case OpKind::kSilu:
      case OpKind::kCast: return set(node.outputs[0], of(in[0]));
      case OpKind::kReduceSum:
      case OpKind::kReduceMean:
      case OpKind::kReduceMax: {
        const Sharding s = of(in[0]);
        if (s.is_split() && s.axis == in[0]->type.rank() - 1) {
          return invalid("a reduction over the split axis");
        }
        return set(node.outputs[0], s);
      }
      case OpKind::kKvWrite: {
        const KvWriteOp op(node);
        const Sharding rows = of(op.rows());
        if (!rows.is_split()) return absl::OkStatus();
        if (rows.axis != 1) return invalid("KV rows split along axis ", rows.axis, ", not heads");
        if (op.cache()->kind != ValueKind::kInput) {
          return invalid("the KV cache is not a graph input");
        }
        auto [it, fresh] = plan_.caches.emplace(op.cache(), rows.blocks);
        if (!fresh && it->second != rows.blocks) {
          return invalid("KV cache %", op.cache()->name, " is written with two different splits");
        }
        const Sharding cache = Sharding::split(2, rows.blocks, op.cache());
        if (absl::Status s = set(op.cache(), cache); !s.ok()) return s;
        return set(op.cache_out(), cache);
      }
      case OpKind::kPagedQk: {
        const PagedQkOp op(node);
        return paged(node, op.q(), op.k_cache());
      }
      case OpKind::kPagedPv: {
        const PagedPvOp op(node);
        return paged(node, op.probs(), op.v_cache());
      }
      case OpKind::kCausalMask: return set(node.outputs[0], of(in[CausalMaskOp::kScores]));
      case OpKind::kRmsNorm:
      case OpKind::kRmsNormResidual:
      case OpKind::kRope:
      case OpKind::kFlashAttention:
      case OpKind::kFusedElementwise:
      case OpKind::kGemm:
        return invalid(
            "a fused op: shard-tensor-parallel runs on the primitive graph, before the "
            "fusions (compile the model with --tp, not a fused IR dump)");
      case OpKind::kAllReduce:
      case OpKind::kAllGather:
        return invalid("the graph already has collectives but declares one rank");
    }
    return invalid("unknown op");
  }

  // matmul(x, w[N, K]): see the file comment.
  absl::Status matmul(Node& node) {
    const Value* x = node.inputs[0];
    const Value* w = node.inputs[1];
    const Sharding sx = of(x);
    const int last = x->type.rank() - 1;
    Value* out = node.outputs[0];
    if (!sx.is_split()) {
      // Column-parallel: rank r computes its block of the output features.
      if (w->kind != ValueKind::kParam || w->type.rank() != 2) return absl::OkStatus();
      const int64_t blocks = blocks_for(w);
      const Dim& rows = w->type.shape[0];
      if (rows.is_symbolic() || rows.value % blocks != 0) {
        if (feeds_only_outputs(g_, out)) {  // the vocabulary projection: every rank computes it
          ++plan_.whole_lm_heads;
          return absl::OkStatus();
        }
        return invalid(blocks, " ranks do not divide the ", rows.to_string(),
                       " output features of @", w->name, " (column-parallel)");
      }
      if (absl::Status s = split_param(node, 1, SliceAxis::kRows, blocks); !s.ok()) return s;
      return set(out, Sharding::split(last, blocks, w));
    }
    if (sx.axis != last) return set(out, sx);  // rows of x split: a row-wise product
    // Row-parallel: x holds this rank's block of the contraction axis.
    if (sx.blocks != n_) {
      return invalid("a row-parallel matmul over a split replicated across ranks (", sx.blocks,
                     " blocks on ", n_, " ranks): the all_reduce would count blocks twice");
    }
    if (w->kind != ValueKind::kParam || w->type.rank() != 2) {
      return invalid("a row-parallel matmul whose weight is not a param matrix");
    }
    if (absl::Status s = split_param(node, 1, SliceAxis::kCols, sx.blocks); !s.ok()) return s;
    plan_.partial.push_back(&node);
    return absl::OkStatus();  // the all_reduce after it makes the result replicated
  }

  // Elementwise binary ops broadcast from the right: every split operand must split the same
  // output axis into the same blocks, and a replicated operand must be broadcast along it (size
  // 1 or absent), or be a param that gets the same split (a bias).
  absl::Status binary(Node& node) {
    Value* out = node.outputs[0];
    const int rank = out->type.rank();
    std::optional<Sharding> split;
    for (int i = 0; i < 2; ++i) {
      const Value* v = node.inputs[i];
      Sharding s = of(v);
      if (!s.is_split()) continue;
      s.axis += rank - v->type.rank();  // as an output axis
      if (split && !split->same_split(s)) return invalid("operands split differently");
      split = s;
    }
    if (!split) return absl::OkStatus();
    for (int i = 0; i < 2; ++i) {
      const Value* v = node.inputs[i];
      if (of(v).is_split()) continue;
      const int axis = split->axis - (rank - v->type.rank());
      if (axis < 0 || v->type.shape[axis] == Dim::constant(1)) continue;  // broadcast
      if (axis > 1 || (axis == 1 && v->type.rank() != 2)) {
        return invalid("operand ", i, " is whole on every rank along the split axis");
      }
      absl::Status s =
          split_param(node, i, axis == 0 ? SliceAxis::kRows : SliceAxis::kCols, split->blocks);
      if (!s.ok()) return s;
    }
    return set(out, *split);
  }

  // A reshape keeps a split when the split axis is the outermost of a group of input dims that
  // becomes a group of output dims with the same product; the split lands on the group's
  // outermost output dim. A head reshape [T, H*D] -> [T, H, D] thus splits H, and needs N | H
  // (or, for KV heads, a smaller block count: restart with the origin at H blocks).
  absl::Status reshape(Node& node) {
    const Value* x = node.inputs[0];
    const Sharding s = of(x);
    if (!s.is_split()) return absl::OkStatus();
    const Shape& a = x->type.shape;
    const Shape& b = node.outputs[0]->type.shape;
    size_t i = 0, j = 0;
    while (i < a.size() && j < b.size()) {
      const size_t gi = i, gj = j;
      if (a[i].is_symbolic() || b[j].is_symbolic()) {
        if (!(a[i] == b[j])) return invalid("a reshape that regroups symbolic dims");
        ++i, ++j;
      } else {
        int64_t pa = a[i].value, pb = b[j].value;
        while (pa != pb) {
          if (pa < pb) {
            if (++i >= a.size() || a[i].is_symbolic()) return invalid("an irregular reshape");
            pa *= a[i].value;
          } else {
            if (++j >= b.size() || b[j].is_symbolic()) return invalid("an irregular reshape");
            pb *= b[j].value;
          }
        }
        ++i, ++j;
      }
      if (s.axis < static_cast<int>(gi) || s.axis >= static_cast<int>(i)) continue;
      for (size_t k = gi; k < static_cast<size_t>(s.axis); ++k) {
        if (!(a[k] == Dim::constant(1))) {
          return invalid("a reshape that moves the split axis inside a group of dims");
        }
      }
      size_t out_axis = gj;
      while (out_axis + 1 < j && b[out_axis] == Dim::constant(1)) ++out_axis;
      const Dim& d = b[out_axis];
      if (!d.is_symbolic() && d.value % s.blocks != 0) {
        if (s.origin != nullptr && s.blocks % d.value == 0) {
          *restart_ = {s.origin, d.value};  // e.g. 2 KV heads on 4 ranks: one per rank, twice
          return absl::OkStatus();
        }
        return invalid(s.blocks, " ranks do not divide the ", d.value, " heads of ",
                       node.outputs[0]->type.to_string(), ", nor do they divide the ranks");
      }
      return set(node.outputs[0], Sharding::split(static_cast<int>(out_axis), s.blocks, s.origin));
    }
    return invalid("a reshape whose split axis was not found");
  }

  // paged_qk / paged_pv: queries (or probabilities) split by query heads, the cache by KV heads.
  // Each rank's query heads must read only the KV heads it holds: the same split of both (N | H_kv)
  // or one KV head per rank (H_kv | N) whose group holds the rank's query heads.
  absl::Status paged(Node& node, const Value* q, const Value* cache) {
    const Sharding sq = of(q), sc = of(cache);
    if (!sq.is_split() && !sc.is_split()) return absl::OkStatus();
    if (!sq.is_split() || !sc.is_split() || sq.axis != 1 || sc.axis != 2) {
      return invalid("queries and KV cache are not both split by heads");
    }
    const int64_t kv_heads = cache->type.shape[2].value;
    if (!(sq.blocks == sc.blocks || (sc.blocks == kv_heads && sq.blocks % sc.blocks == 0))) {
      return invalid(sq.blocks, " query-head blocks cannot read ", sc.blocks, " KV-head blocks of ",
                     kv_heads, " KV heads");
    }
    return set(node.outputs[0], sq);
  }

  const Graph& g_;
  const int n_;
  const absl::flat_hash_map<const Value*, int64_t>& blocks_override_;
  std::pair<const Value*, int64_t>* restart_ = nullptr;
  ShardPlan plan_;
};

/// Heads checks with the user's vocabulary, before the propagation's own errors: N must divide
/// the query heads, and divide the KV heads or be a multiple of them.
absl::Status check_heads(const Graph& g, int n, PassContext& context, const std::string& pass) {
  for (const auto& node : g.nodes()) {
    std::optional<PagedQkOp> qk = op_view<PagedQkOp>(node.get());
    if (!qk) continue;
    const Dim& hq = qk->q()->type.shape[1];
    const Dim& hkv = qk->k_cache()->type.shape[2];
    if (hq.is_symbolic() || hkv.is_symbolic()) return invalid("symbolic head counts");
    if (hq.value % n != 0) {
      return invalid("tensor parallelism over ", n, " ranks splits attention by heads, but ", n,
                     " does not divide the ", hq.value, " query heads");
    }
    if (hkv.value % n != 0 && n % hkv.value != 0) {
      return invalid("tensor parallelism over ", n, " ranks: ", n, " must divide the ", hkv.value,
                     " KV heads, or be a multiple of them (each rank then holds one KV "
                     "head, replicated on ",
                     n, " / ", hkv.value, " ranks)");
    }
    context.stats[pass]["query heads per rank"] = hq.value / n;
    context.stats[pass]["KV heads per rank"] = std::max<int64_t>(1, hkv.value / n);
    if (n > hkv.value) context.stats[pass]["ranks per KV head"] = n / hkv.value;
  }
  return absl::OkStatus();
}

class ShardTensorParallel : public Pass {
 public:
  std::string name() const override { return "shard-tensor-parallel"; }
  std::string description() const override {
    return "tensor parallelism (--tp N): attention by heads, MLP by columns then rows, LM head by "
           "vocabulary; all_reduce / all_gather where the ranks meet";
  }

  absl::StatusOr<bool> run(Graph& graph, PassContext& context) override {
    const int n = context.tensor_parallel;
    if (n < 1) return invalid("tensor parallelism over ", n, " ranks");
    if (graph.ranks() != 1) {
      if (graph.ranks() == n || n == 1) return false;  // sharded already (an IR dump)
      return invalid("the graph is already sharded over ", graph.ranks(), " ranks, not ", n);
    }
    if (n == 1) return false;
    // An fp8e4m3 KV cache's scale arrays ([NP, page, KV heads]) would split with the KV heads,
    // which the analysis does not do yet: refused rather than sharded wrong.
    for (const Value* in : graph.inputs()) {
      if (in->type.dtype == DType::kFP8E4M3) {
        return invalid("--tp ", n, " with an fp8e4m3 KV cache (", in->name,
                       ") is not supported yet: compile with --kv-dtype bf16, or without --tp");
      }
    }
    if (absl::Status s = check_heads(graph, n, context, name()); !s.ok()) return s;

    // The analysis, again with a smaller block count for an origin that needs one (GQA).
    absl::flat_hash_map<const Value*, int64_t> blocks;
    std::optional<ShardPlan> plan;
    for (int attempt = 0; !plan; ++attempt) {
      if (attempt > graph.num_nodes()) return absl::InternalError("shard analysis does not settle");
      std::pair<const Value*, int64_t> restart = {nullptr, 0};
      absl::StatusOr<std::optional<ShardPlan>> p = ShardAnalysis(graph, n, blocks).run(&restart);
      if (!p.ok()) return p.status();
      plan = std::move(*p);
      if (!plan) blocks[restart.first] = restart.second;
    }
    if (absl::Status s = check_quant_blocks(*plan, context); !s.ok()) return s;
    if (absl::Status s = rewrite(graph, *plan, n, context); !s.ok()) return s;
    return true;
  }

 private:
  // A rank's slice must hold whole quantization blocks of the stored weight (GGUF Q4_K: 256
  // values): the runtimes assemble slices from the stored bytes.
  static absl::Status check_quant_blocks(const ShardPlan& plan, const PassContext& context) {
    for (const ParamSplit& p : plan.params) {
      auto it = context.weight_dtypes.find(p.param->name);
      if (it == context.weight_dtypes.end() || !is_quantized(it->second)) continue;
      const int64_t block = block_elements(it->second);
      const int dim = p.axis == SliceAxis::kRows ? 0 : 1;
      const int64_t len = p.param->type.shape[dim].value / p.blocks;
      int64_t row = 1;  // values per row slice of a rows split
      for (int d = 1; d < p.param->type.rank(); ++d) row *= p.param->type.shape[d].value;
      const int64_t values = p.axis == SliceAxis::kRows ? len * row : len;
      if (values % block != 0) {
        return invalid("tensor parallelism: a rank's ", slice_axis_name(p.axis), " [0:", len,
                       ") of @", p.param->name, " split a ", dtype_name(it->second), " block of ",
                       block,
                       " values; use fewer ranks, or a checkpoint whose quantization "
                       "blocks fit the shards (or an unquantized one)");
      }
    }
    return absl::OkStatus();
  }

  static absl::Status rewrite(Graph& g, const ShardPlan& plan, int n, PassContext& context) {
    const std::string pass = "shard-tensor-parallel";
    context.stats[pass]["ranks"] = n;
    // 1. Each split param use reads a sharded param: rank r's block r * blocks / n.
    absl::flat_hash_set<std::string> taken;
    for (const Value* p : g.params()) taken.insert(p->name);
    std::map<std::tuple<const Value*, SliceAxis, int64_t>, Value*> made;
    absl::flat_hash_set<const Value*> replaced;
    for (const ParamSplit& s : plan.params) {
      Value*& sharded = made[{s.param, s.axis, s.blocks}];
      if (sharded == nullptr) {
        const int dim = s.axis == SliceAxis::kRows ? 0 : 1;
        const int64_t len = s.param->type.shape[dim].value / s.blocks;
        std::vector<std::vector<ParamPart>> ranks(n);
        for (int r = 0; r < n; ++r) {
          const int64_t block = int64_t{r} * s.blocks / n;
          ranks[r] = {{s.param->name, s.axis, block * len, (block + 1) * len}};
        }
        Type t = s.param->type;
        t.shape[dim] = Dim::constant(len);
        std::string name = absl::StrCat(s.param->name, ".shard");
        while (!taken.insert(name).second) name += "_";
        sharded = g.add_sharded_param(name, std::move(t), std::move(ranks));
        context.count(pass, s.axis == SliceAxis::kRows ? "weights split by rows"
                                                       : "weights split by columns");
      }
      g.set_input(s.node, s.operand, sharded);
      replaced.insert(s.param);
    }
    // 2. Each rank's KV cache holds its KV heads.
    for (const auto& [cache, blocks] : plan.caches) {
      Value* c = const_cast<Value*>(cache);
      c->type.shape[2].value /= blocks;
      context.count(pass, "KV caches split by heads");
    }
    // 3. Head reshapes name the per-rank head count.
    for (const auto& node : g.nodes()) {
      if (node->op != OpKind::kReshape) continue;
      auto it = plan.sharding.find(node->outputs[0]);
      if (it == plan.sharding.end() || !it->second.is_split()) continue;
      absl::StatusOr<IntList> shape = node->attrs.get_int_list("shape");
      if (!shape.ok()) return shape.status();
      int64_t& d = (*shape)[it->second.axis];
      if (d != 0) d /= it->second.blocks;  // 0 copies the (already split) input dim
      node->attrs.set("shape", *shape);
    }
    // 4. An all_reduce completes each row-parallel matmul's partial sums.
    Attributes ranks_attr;
    ranks_attr.set("ranks", int64_t{n});
    for (Node* mm : plan.partial) {
      Value* partial = mm->outputs[0];
      Node* reduce =
          g.add_node(OpKind::kAllReduce, {partial}, ranks_attr, {partial->type}, g.next(mm));
      g.replace_all_uses(partial, reduce->outputs[0]);
      g.set_input(reduce, 0, partial);
      context.count(pass, "all_reduce inserted");
    }
    // 5. Split outputs (the vocabulary-split logits) are gathered whole.
    for (int i : plan.gathered_outputs) {
      Value* v = g.outputs()[i].value;
      const Sharding s = plan.sharding.at(v);
      Attributes a = ranks_attr;
      a.set("axis", int64_t{s.axis});
      Node* gather = g.add_node(OpKind::kAllGather, {v}, a, {v->type});
      g.set_output(i, gather->outputs[0]);
      context.count(pass, "all_gather inserted");
    }
    if (plan.whole_lm_heads > 0) {
      context.count(pass, "vocabulary projections kept whole (N does not divide the vocabulary)",
                    plan.whole_lm_heads);
    }
    g.set_ranks(n);
    g.erase_unread_params([&](const Value* p) { return replaced.contains(p); });
    // 6. Every result's type again, in program order, from the new params, caches and reshapes.
    for (const auto& node : g.nodes()) {
      std::vector<Type> types;
      for (const Value* v : node->inputs) types.push_back(v->type);
      absl::StatusOr<std::vector<Type>> out =
          infer_types(node->op, types, node->attrs, g.symbols());
      if (!out.ok()) {
        return absl::InternalError(absl::StrCat("shard-tensor-parallel left ", where(*node),
                                                " ill-typed: ", out.status().message()));
      }
      for (size_t i = 0; i < node->outputs.size(); ++i) node->outputs[i]->type = (*out)[i];
    }
    return absl::OkStatus();
  }
};

}  // namespace

std::unique_ptr<Pass> make_shard_tensor_parallel_pass() {
  return std::make_unique<ShardTensorParallel>();
}

}  // namespace kiln
