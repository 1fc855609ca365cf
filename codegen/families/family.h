// What a kernel family defines (one codegen/families/<family>.{h,cc} pair beside its
// kernels/<family>.cuh): a spec struct holding the family's typed parameters, which yields the
// canonical key, the entry signature and the emitted source; and a lowering that turns an IR node
// into launches of that spec (launch rule + arguments bound by entry parameter name). The
// registry (registry.h) maps ops to lowerings; lowering.cc only dispatches.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "ir/printer.h"
#include "plan/plan.h"

namespace kiln {

/// One parameter of a generated entry: its C type and name ("const kiln_t*", "q").
struct EntryDecl {
  std::string c_type;
  std::string name;
};

/// How the plan records `decls`: the name and the packing type derived from the C type (a
/// pointer, "int", "long long" or "float").
std::vector<EntryParam> plan_params(const std::vector<EntryDecl>& decls);

/// What a kernel's source instantiates: the template `call` of kernels/<include> on `call_args`,
/// after `typedef <kiln_t> kiln_t;` and `config` (typedefs, baked tables, generated helpers). A
/// standalone kernel wraps it in an `extern "C" __global__` entry named by the spec's key
/// (kernel_source.h); the persistent decode kernel wraps many of them, each in a namespace of its
/// own, in one entry (codegen/families/persistent_decode.h).
struct KernelTemplate {
  std::string include;    ///< "gemv.cuh"
  DType kiln_t = DType::kBF16;
  std::string config;     ///< source between the kiln_t typedef and the entry
  int64_t threads = 0;    ///< the block the template is written for (its __launch_bounds__)
  std::string call;       ///< "kiln_k::gemv<kiln_t, kiln_out_t, ...>"
  std::string call_args;  ///< "" = the entry's parameters in order
  int64_t min_blocks = 0; ///< __launch_bounds__' minimum blocks per SM (0: none)
  /// A call on the same entry parameters that asks L2 for the bytes the block will stream first
  /// (its weight rows), made by the persistent kernel before a task waits on the tasks it depends
  /// on; "" = none.
  std::string prefetch_call, prefetch_args;
  /// Dynamic shared memory the template takes when compiled into the persistent decode kernel
  /// (KILN_PERSISTENT), where it declares as dynamic what it otherwise declares statically.
  int64_t persistent_shared_bytes = 0;
};

/// One kernel specialization. Each family's spec struct derives from this and holds only that
/// family's parameters; everything below is derived from them.
class KernelSpec {
 public:
  virtual ~KernelSpec() = default;
  virtual KernelFamily family() const = 0;
  /// Canonical name, e.g. "flash_attention_prefill_bf16_d64_g3_q64_kv64_w4": the entry's name in
  /// the cubin, the kernel's identity in the plan, and (hashed with the source) its cache key.
  virtual std::string key() const = 0;
  /// The entry's parameters, in order: what a launch binds.
  virtual std::vector<EntryDecl> entry() const = 0;
  /// The template instantiation this kernel is.
  virtual absl::StatusOr<KernelTemplate> kernel_template() const = 0;
  /// The complete source NVRTC compiles: kernel_template() in an entry named key(), unless a
  /// family assembles its own (the persistent decode kernel).
  virtual absl::StatusOr<std::string> source() const;
};

/// The key format every family shares: "<family>_<dtype>" + "_<name><value>" per parameter +
/// "_<tag>" per tag + "_h<8 hex digits of xxh3(payload)>" when data is baked into the source.
std::string spec_key(KernelFamily family, DType dtype,
                     const std::vector<std::pair<std::string, int64_t>>& params,
                     const std::vector<std::string>& tags = {}, const std::string& payload = "");

/// What the lowering has produced so far, in the plan's types; `launches[i].kernel` indexes
/// `kernels` and the parallel `specs`.
struct LoweredGraph {
  std::vector<std::shared_ptr<const KernelSpec>> specs;  // unique by key, in order of first use
  std::vector<PlanKernel> kernels;  // specs[i]'s key, family and signature (no blobs yet)
  std::vector<PlanLaunch> launches;
  std::vector<PlanGemm> gemms;
  std::vector<PlanWorkspace> workspaces;
  std::vector<PlanAlias> aliases;
  std::vector<PlanConstant> constants;
  std::optional<PlanPersistent> persistent;  // codegen/families/persistent_decode.h
  std::vector<PlanCascade> cascades;         // codegen/families/cascade_attention.h
  std::vector<PlanCollective> collectives;
};

/// One argument binding: entry parameter name -> value.
using BoundParam = std::pair<std::string, LaunchArg>;

/// What a family's lowering sees and emits for one node.
class LoweringContext {
 public:
  LoweringContext(const Graph& graph, LoweredGraph& out);

  /// Switches to node `index` of the program (-1: runtime-added launches such as sampling).
  void set_node(int index, const Node* node) { index_ = index, node_ = node, node_bound_ = {}; }
  /// Bounds every launch of the current node that has no bound of its own to the steps inside
  /// `bound`: the node runs in its own kernel only where no fused kernel computes it (an rmsnorm
  /// or SwiGLU that a small-batch GEMV absorbs at M <= 16).
  void bound_node_launches(StepBound bound) { node_bound_ = std::move(bound); }
  int node_index() const { return index_; }
  const Graph& graph() const { return graph_; }
  std::string name(const Value* v) const { return names_(v); }
  /// `v` as a launch argument, for a kernel parameter that reads it contiguously: a strided
  /// view (ir/view.h) there makes the node's launch() fail with a message naming both.
  LaunchArg tensor(const Value* v) const;
  /// `v` as a launch argument of a parameter that takes strided rows; `row_stride` is set to
  /// the elements between its first-dim rows (0: contiguous) for the kernel's spec.
  LaunchArg strided_tensor(const Value* v, int64_t* row_stride) const;
  /// Whether `v` is laid out contiguously (not a strided view); for operands bound by name, as
  /// a GEMM's are.
  bool contiguous(const Value* v) const;

  /// Adds a launch of `spec` for the current node. `args` names every entry parameter once (in
  /// any order); they are put in entry order, and a missing or unknown name is an error.
  absl::Status launch(std::shared_ptr<const KernelSpec> spec, LaunchRule rule,
                      std::vector<BoundParam> args);
  void add_workspace(PlanWorkspace w) { out_.workspaces.push_back(std::move(w)); }
  /// Whether a workspace of this name was added (one shared by several nodes is added once).
  bool has_workspace(std::string_view name) const;
  /// Launches added so far: the index the next launch() gets.
  int num_launches() const { return static_cast<int>(out_.launches.size()); }
  void add_cascade(PlanCascade c) { out_.cascades.push_back(c); }
  void add_alias(PlanAlias a) { out_.aliases.push_back(std::move(a)); }
  void add_gemm(PlanGemm g) { out_.gemms.push_back(std::move(g)); }
  void add_constant(PlanConstant c) { out_.constants.push_back(std::move(c)); }
  void add_collective(PlanCollective c) { out_.collectives.push_back(std::move(c)); }

  /// "no GPU lowering for `<node>`: <why>" (Unimplemented), for a node a family cannot lower.
  absl::Status unsupported(const std::string& why) const;

 private:
  const Graph& graph_;
  ValueNames names_;
  LoweredGraph& out_;
  int index_ = -1;
  const Node* node_ = nullptr;
  StepBound node_bound_;
  // The first operand bound with tensor() that is not contiguous, until launch() reports it.
  mutable absl::Status layout_error_;
};

/// How a row kernel (rmsnorm, gather) covers a row of `h` elements: 16-byte vectors when the row
/// allows (narrower otherwise), up to 256 threads, `per_thread` vectors each.
struct RowVectors {
  int64_t vec = 1;         // elements per vector
  int64_t per_thread = 1;  // vectors per thread
  int64_t threads = 32;
};
RowVectors row_vectors(int64_t h, DType dtype);

/// A one-dimensional launch rule: grid.x = `grid`, block.x = `block`.
LaunchRule rule_1d(const std::string& grid, int64_t block, StepKind when = StepKind::kAlways);

/// A dim as a launch expression: "576", "T", "(S+1)".
std::string dim_expr(const Dim& d);
/// The product of dims [begin, end) as an expression, constants folded: "T*9".
std::string product_expr(const Shape& s, size_t begin, size_t end);
/// The value of a constant dim; an error naming `what` for a symbolic one.
absl::StatusOr<int64_t> const_dim(const Dim& d, const char* what);

}  // namespace kiln
