// The compiler–runtime contract: a typed Plan (what `kiln compile` produces and every backend
// runs). codegen/ fills it, plan/plan_json.cc is the only place it meets JSON, plan/plan_file.h
// reads and writes the .kplan container, and runtime/ consumes it. Nothing here depends on
// codegen/ or runtime/; everything is plain data a test can build by hand.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ir/dtype.h"
#include "ir/graph.h"             // SliceAxis
#include "models/llama_graph.h"   // StepLimits
#include "models/model_config.h"  // ModelConfig
#include "plan/kernel_family.h"
#include "plan/kv_layout.h"
#include "plan/memory_plan.h"

namespace kiln {

/// C type of one kernel entry parameter, as the launch packs it.
enum class ParamType : uint8_t {
  kPointer,  ///< a device pointer (const or not)
  kI32,
  kI64,
  kF32,
};

/// One parameter of a kernel's `extern "C" __global__` entry, in order.
struct EntryParam {
  std::string name;  ///< "q", "kv_page_indptr", "eps"
  ParamType type = ParamType::kPointer;
  bool operator==(const EntryParam&) const = default;
};

/// One compiled kernel specialization. `key` is the KernelSpec's canonical key and the entry
/// name in the cubin.
struct PlanKernel {
  std::string key;
  KernelFamily family = KernelFamily::kRmsNorm;
  std::vector<EntryParam> params;
  int registers = 0;
  int shared_bytes = 0;
  int stack_bytes = 0;
  int spill_bytes = 0;
  /// Blob indices in the plan file (-1 = absent). The bytes are reached through LoadedPlan.
  int cubin_blob = -1;
  int ptx_blob = -1;
  int source_blob = -1;
};

/// Per-step device buffers the runtime supplies beyond the graph's inputs: the sampling inputs
/// (one value per sequence) and a cascade step's layout (runtime/kv/cascade_layout.h).
enum class RuntimeInput : uint8_t {
  kSampledIds,          ///< i32[S] output of the sampling kernel
  kTemperature,         ///< f32[S]
  kTopK,                ///< i32[S]
  kTopP,                ///< f32[S]
  kUniform,             ///< f32[S] uniform draws in [0, 1) made by the engine
  kCascadePrefixSeqs,   ///< i32[CM] CascadeLayout::prefix_seqs
  kCascadePrefixPages,  ///< i32[cdiv(CL, page size)] CascadeLayout::prefix_pages
  kCascadeKvStart,      ///< i32[S] CascadeLayout::kv_start
};

/// How one launch argument is produced. Exactly one of the fields after `kind` is meaningful.
struct LaunchArg {
  enum class Kind : uint8_t {
    kTensor,     ///< the device address of an IR value (`value`: "%12", "@embed", "tokens")
    kInt,        ///< an integer expression of the step's symbols (`expr`: "cdiv(T*3, 64) + S")
    kFloat,      ///< a literal (`real`)
    kWorkspace,  ///< the address of a scratch buffer (`value`: a PlanWorkspace name)
    kRuntime,    ///< a runtime-supplied per-sequence buffer (`runtime`)
  };
  Kind kind = Kind::kTensor;
  std::string value;  // kTensor, kWorkspace
  std::string expr;   // kInt
  double real = 0;    // kFloat
  RuntimeInput runtime = RuntimeInput::kSampledIds;

  static LaunchArg tensor(std::string v) { return {Kind::kTensor, std::move(v), "", 0, {}}; }
  static LaunchArg integer(std::string e) { return {Kind::kInt, "", std::move(e), 0, {}}; }
  static LaunchArg floating(double x) { return {Kind::kFloat, "", "", x, {}}; }
  static LaunchArg workspace(std::string w) { return {Kind::kWorkspace, std::move(w), "", 0, {}}; }
  static LaunchArg runtime_input(RuntimeInput r) { return {Kind::kRuntime, "", "", 0, r}; }
  bool operator==(const LaunchArg&) const = default;
};

/// Which steps a launch runs in: every step, or only prefill steps (some sequence has more than
/// one query token), or only decode steps (every sequence has exactly one), or only decode steps
/// whose inputs carry a cascade layout (StepInputs::cascade), where a PlanCascade names the
/// launch as the cascade form of a plain decode launch. A runtime that does not run cascade steps
/// never runs a kCascade launch (launch_runs_in says false for both step kinds).
enum class StepKind : uint8_t { kAlways, kPrefill, kDecode, kCascade };

/// The symbols a cascade step binds beyond the IR's (T, S, K, ...), for the kCascade launches'
/// expressions: the members sharing the prefix, the prefix's length, and the longest suffix
/// (max over the step's sequences of KV length - kv_start). Their upper bounds are S's, K's, K's.
inline constexpr const char* kCascadeMembersSymbol = "CM";
inline constexpr const char* kCascadePrefixSymbol = "CL";
inline constexpr const char* kCascadeSuffixSymbol = "CK";

/// A bound on one integer expression of the step, so that a plan can carry two lowerings of one
/// op and every step runs exactly one of them. An op runs in a step only when `expr` is empty or
/// its value v satisfies min <= v (min 0: no lower bound) and v <= max (max 0: no upper bound);
/// this is checked after `when`. The rule for GEMMs (codegen/families/gemv.h): `expr` is the
/// GEMM's M ("T", or "S" for the LM head), the GEMV launch has max 16 and its cuBLASLt PlanGemm
/// min 17. A backend that runs the IR (the reference) ignores it.
struct StepBound {
  std::string expr;  ///< a launch expression (plan/launch_expr.h); "" = no bound
  int64_t min = 0;
  int64_t max = 0;
  bool empty() const { return expr.empty(); }
  bool operator==(const StepBound&) const = default;
};

/// Grid and block as integer expressions of the step's symbols (grammar: plan/launch_expr.h).
struct LaunchRule {
  std::array<std::string, 3> grid = {"1", "1", "1"};
  std::array<std::string, 3> block = {"1", "1", "1"};
  std::string dynamic_shared_bytes = "0";
  StepKind when = StepKind::kAlways;
  StepBound bound;  ///< runs only in steps inside the bound (see StepBound)
  bool operator==(const LaunchRule&) const = default;
};

/// One kernel launch in program order. `args` follow the kernel's EntryParam list one to one.
struct PlanLaunch {
  int node = -1;   ///< node index in the final IR's program order; -1 = runtime-added (sampling)
  int kernel = 0;  ///< index into Plan::kernels
  LaunchRule rule;
  std::vector<LaunchArg> args;
};

enum class GemmEpilogue : uint8_t { kNone, kBias, kResidual, kBiasResidual };

/// A matmul / gemm node, run by cuBLASLt (or the reference backend): out[M, N] = a[M, K]·b[N, K]ᵀ
/// (+ bias[N]) (+ residual[M, N], through beta = 1 with the residual as the output's contents).
struct PlanGemm {
  int node = -1;
  std::string m;  ///< expression of the symbols ("T", "S")
  int64_t n = 0, k = 0;
  DType a_dtype = DType::kBF16, b_dtype = DType::kBF16, out_dtype = DType::kBF16;
  GemmEpilogue epilogue = GemmEpilogue::kNone;
  std::string a, b, bias, residual, out;  ///< value names ("" when absent)
  StepBound bound;  ///< runs only in steps inside the bound (a GEMV launch covers the rest)
};

/// Scratch memory a kernel needs beyond the IR's values (split-KV partials), sized by an
/// expression of the symbols.
struct PlanWorkspace {
  std::string name;
  std::string bytes;
  /// The runtime fills it with zeros once, at load. A kernel that keeps state across launches in
  /// it (the decode attention's split counters) relies on that and leaves it zeroed when it ends.
  bool zeroed = false;
  /// A table of device addresses the runtime writes once, at load: 8 bytes per entry, each a
  /// tensor, workspace or runtime buffer named as a launch argument names it (the persistent
  /// decode kernel's operands). Empty for scratch memory.
  std::vector<LaunchArg> addresses;
};

/// The persistent decode kernel (codegen/families/persistent_decode.h): one launch whose resident
/// blocks run the blocks of `stages` as tasks, each stage's after every task of the stage before
/// it has finished, instead of launching them; in the steps its own rule admits (decode steps
/// with few enough sequences), the runtime launches it in place of the stages. Every block of it
/// must be resident at once (a task waits for tasks of other blocks), so its grid is the
/// runtime's: as many blocks as the GPU holds at once; the rule's grid is ignored.
struct PlanPersistent {
  int launch = -1;          ///< index into Plan::launches: the persistent kernel's launch
  std::vector<int> stages;  ///< indices into Plan::launches of the launches it runs, in order
};

/// Cascade attention (codegen/families/cascade_attention.h) for one flash_attention node: in a
/// decode step whose inputs carry a cascade layout, the runtime runs `prefix` then `suffix` (both
/// StepKind::kCascade) in place of `decode`, the node's plain decode launch. They write the same
/// output; the suffix's last split merges the prefix's partials. Plans of fp8e4m3 caches have
/// none (plain decode serves them).
struct PlanCascade {
  int decode = -1;  ///< index into Plan::launches: the plain decode launch (StepKind::kDecode)
  int prefix = -1;  ///< the cascade_prefix launch
  int suffix = -1;  ///< the cascade_suffix launch
  bool operator==(const PlanCascade&) const = default;
};

/// A value that shares another's bytes (reshape views; the in-place KV cache results).
struct PlanAlias {
  std::string value, of;
};

/// A scalar constant value of the graph, materialized once at load.
struct PlanConstant {
  std::string value;
  DType dtype = DType::kF32;
  double scalar = 0;
};

/// [begin, end) along `axis` of another, stored plan weight: rows (with every trailing dim), or
/// columns of a matrix (with every row).
struct PlanWeightPart {
  std::string source;  ///< the PlanWeight::name of a weight with a file reference or a blob
  SliceAxis axis = SliceAxis::kRows;
  int64_t begin = 0, end = 0;
  bool operator==(const PlanWeightPart&) const = default;
};

/// One weight the plan's IR reads as a param (`@name`). Either a reference into the source
/// checkpoint (file + byte range + checksum; the default), a blob packed into the plan, or
/// derived: the concatenation of row ranges (or column ranges) of other weights (`parts`), which
/// the runtime assembles at upload. Derived weights keep the plan referencing the checkpoint
/// instead of copying it: horizontal fusion's merged Q/K/V and gate/up matrices are derived, and
/// so is a tensor-parallel rank's slice of a weight (rows of a column-parallel weight, columns of
/// a row-parallel one). plan/weight_parts.h resolves them.
struct PlanWeight {
  std::string name;  ///< the IR param name ("layers.0.q_proj")
  /// The tensor-parallel rank that holds this weight, or -1 for every rank. A sharded IR param
  /// (Value::rank_parts) has one derived PlanWeight of its name per rank.
  int32_t rank = -1;
  DType dtype = DType::kBF16;
  std::vector<int64_t> shape;
  // Reference into the checkpoint:
  std::string file;         ///< absolute path
  std::string source_name;  ///< the tensor's name inside that file
  uint64_t offset = 0;      ///< bytes from the file's start
  uint64_t size = 0;        ///< bytes
  uint64_t xxh3 = 0;
  // Or packed:
  int blob = -1;
  // Or derived (then file/offset/size/xxh3 and blob are unused):
  std::vector<PlanWeightPart> parts;
  bool packed() const { return blob >= 0; }
  bool derived() const { return !parts.empty(); }
};

/// A collective of a tensor-parallel plan: an all_reduce or all_gather node, which the CUDA
/// backend runs through NCCL on the step's stream (inside the step's CUDA graph) and the
/// reference backend as sums / concatenations over the ranks' buffers.
enum class CollectiveKind : uint8_t { kAllReduce, kAllGather };

struct PlanCollective {
  int node = -1;  ///< node index in the final IR's program order
  CollectiveKind kind = CollectiveKind::kAllReduce;
  DType dtype = DType::kBF16;
  std::string in, out;  ///< value names ("%12")
  /// `in` (each rank's) as `outer` rows of `inner` contiguous elements: all_reduce sums
  /// outer * inner elements; all_gather puts rank r's row o at out[(o * ranks + r) * inner] (NCCL
  /// gathers rank-major, so for outer > 1 the runtime reorders the rows).
  std::string outer;  ///< an expression of the step's symbols ("T", "S", "1")
  int64_t inner = 0;
};

/// The most tensor-parallel ranks a plan may declare (a bound for readers of untrusted plans).
inline constexpr int kMaxPlanRanks = 1024;

/// Everything `kiln compile` decided. The final IR text is the program; launches and GEMMs are
/// its GPU lowering in program order (ascending `node`; within one node, launches in list order).
struct Plan {
  uint32_t format_version = 0;
  std::string kiln_version;
  std::string arch;           ///< "sm_90a"
  std::string nvrtc_version;  ///< "13.0"
  std::vector<std::string> nvrtc_flags;

  ModelConfig model;
  std::string model_path;      ///< the checkpoint it was compiled from (absolute)
  std::string tokenizer_path;  ///< tokenizer.json or the .gguf (absolute)
  StepLimits limits;

  std::string ir;  ///< the final IR text (parseable by ir/parser.h)
  std::vector<PlanKernel> kernels;
  std::vector<PlanLaunch> launches;
  std::vector<PlanGemm> gemms;
  std::vector<PlanWorkspace> workspaces;
  std::vector<PlanAlias> aliases;
  std::vector<PlanConstant> constants;
  std::optional<PlanPersistent> persistent;  ///< `kiln compile --persistent`
  std::vector<PlanCascade> cascades;         ///< one per decode attention node (not fp8e4m3)
  std::optional<MemoryPlan> memory;
  KvLayout kv;
  std::vector<PlanWeight> weights;
  /// Tensor parallelism (`kiln compile --tp N`): the IR is one program (`ranks N`) that `ranks`
  /// ranks each run on their own GPU, with their own weight slices (PlanWeight::rank), KV cache
  /// and arena. Kernels, launches, GEMMs, `memory` and `kv` are each rank's, the same on every
  /// rank (each rank's KV cache holds its own KV heads: kv.num_kv_heads of them).
  int32_t ranks = 1;
  std::vector<PlanCollective> collectives;

  /// Index of the kernel with `key`, or -1.
  int find_kernel(std::string_view key) const;
  /// The weight named `name` that rank `rank` holds: its own shard, or one every rank holds
  /// (rank -1: only the latter); null when there is none.
  const PlanWeight* find_weight(std::string_view name, int rank = -1) const;
};

}  // namespace kiln
