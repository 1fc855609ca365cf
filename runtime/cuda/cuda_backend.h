// CudaBackend: the GPU Backend. It loads a plan's cubins (checked against the
// GPU's arch), uploads the weights once in the IR params' dtype (GGUF blocks
// dequantized on the host), lays out one activation arena from the plan's
// MemoryPlan, sizes the paged KV pool, and runs each step as the plan's kernel
// launches and cuBLASLt GEMMs in program order on one stream, then the plan's
// sampling kernel; only token ids (and logits when asked) come back over PCIe.
// Decode steps are replayed from CUDA graphs (see cuda_backend.cc for the
// invariant that makes replay exact).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "ir/graph.h"
#include "runtime/backend.h"
#include "runtime/cuda/driver.h"
#include "runtime/cuda/gemm.h"
#include "runtime/cuda/nccl.h"
#include "runtime/reference/host_tensor.h"

namespace kiln {

class ValueNames;

/// Counters of the last run_step, for `kiln bench` and the tests.
struct CudaStepStats {
  int launches = 0;             ///< kernel launches + GEMMs enqueued (or recorded in the graph)
  bool graph_replay = false;    ///< the step was a CUDA-graph replay
  bool graph_captured = false;  ///< this step captured a new graph
  bool persistent = false;      ///< the step ran the persistent decode kernel
  bool cascade = false;         ///< the step ran cascade attention (StepInputs::cascade)
};

class CudaBackend : public Backend {
 public:
  /// What `kiln run --check` (runtime/check/) sees of a step: told before the first op of each
  /// graph node that launches work is enqueued, and after its last op finished. The device is
  /// idle both times, so download_value() reads exactly what the node consumed and produced
  /// (before() matters for nodes that write in place over an input's buffer).
  class NodeObserver {
   public:
    virtual ~NodeObserver() = default;
    virtual absl::Status before(const Node& node) = 0;
    virtual absl::Status after(const Node& node) = 0;
  };

  /// One rank of a tensor-parallel plan: which rank (its GPU is device `rank`), and the NCCL
  /// communicator its collectives run on (which must outlive the backend).
  struct TensorParallelRank {
    int rank = 0;
    std::shared_ptr<const Nccl> nccl;
    const NcclComm* comm = nullptr;
  };

  /// Opens GPU 0 and loads `plan` onto it. Unavailable when there is no usable
  /// GPU (the message says why); FailedPrecondition when the plan was compiled
  /// for another arch (the message says how to recompile), or is tensor-parallel
  /// (runtime/cuda/tensor_parallel_backend.h runs those); other errors name
  /// the weight, kernel or buffer.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> create(const Plan& plan,
                                                             const BackendOptions& options,
                                                             const PlanBlobReader& blobs);
  /// create() for rank `tp.rank` of a tensor-parallel plan, on GPU `tp.rank`: that rank's weight
  /// slices, its own KV pool and arena, and the plan's collectives through `tp.comm` on the
  /// step's stream (so a captured decode graph holds them). Every rank must be created at once,
  /// each on its own thread: the warm-up step's collectives wait for all of them. UNTESTED on
  /// GPUs: no multi-GPU machine was available when it was written.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> create_rank(const Plan& plan,
                                                                  const BackendOptions& options,
                                                                  const PlanBlobReader& blobs,
                                                                  TensorParallelRank tp);
  ~CudaBackend() override;

  std::string name() const override { return "cuda"; }
  const Plan& plan() const override { return plan_; }
  int64_t kv_pages() const override { return kv_pages_; }
  std::string load_report() const override { return report_; }
  absl::Status copy_kv_pages(absl::Span<const PageCopy> copies) override;
  absl::StatusOr<StepResult> run_step(const StepRequest& step) override;

  /// run_step, eagerly (never from a CUDA graph) and synchronized after every op, with
  /// `observer` told of every node that runs. For checking, not for speed. The activation arena
  /// is poisoned (0xFF bytes: NaN, or -1 for i32) first, so a node result no launch of this step
  /// wrote (one a neighbour's fused kernel made unnecessary, e.g. the rmsnorm a GEMV normalizes
  /// in its prologue) reads back as all NaN.
  absl::StatusOr<StepResult> run_step_observed(const StepRequest& step, NodeObserver& observer);
  /// A value of the plan's IR (a step input, weight, KV cache, constant or node result) as the
  /// current step holds it on the device, shaped by the step's symbols: float dtypes widened to
  /// f32, i32 as is. Valid inside NodeObserver calls and after a step, until the next step.
  absl::StatusOr<HostTensor> download_value(const Value& value);
  /// The symbols the current (or last) step bound: T, S, P, K, NP.
  SymbolBindings step_symbols() const {
    SymbolBindings b;
    for (const auto& [name, value] : symbols_) b.set(name, value);
    return b;
  }
  /// The plan's IR as this backend parsed it (PlanLaunch::node indexes its nodes()).
  const Graph& graph() const { return *graph_; }

  const CudaStepStats& last_step() const { return last_step_; }
  /// Bytes of weights on the device (what one decode step must read).
  int64_t weight_bytes() const { return weight_bytes_; }
  /// Bytes of one token's K and V over every layer.
  int64_t kv_bytes_per_token() const;
  /// The persistent decode kernel's grid (every block resident), or 0 when the plan has none or it
  /// is off (BackendOptions::persistent, or it does not fit this GPU: load_report() says why).
  int persistent_blocks() const { return persistent_ ? persistent_blocks_ : 0; }
  GpuDevice& device() { return *device_; }

 private:
  struct Op;           // one prepared launch or GEMM
  struct InputRegion;  // one step input's slice of the fixed input buffer
  struct Resolver;     // plan/launch_binding.h's LaunchResolver over addresses_
  CudaBackend() = default;

  absl::Status load_kernels(const PlanBlobReader& blobs);
  absl::Status upload_weights(const PlanBlobReader& blobs, const BackendOptions& options);
  absl::Status allocate_activations();
  absl::Status allocate_kv(const BackendOptions& options);
  /// The pool's array of the layers' K and V `half` (2 * layer + is_v): its elements, or its
  /// scales (fp8e4m3).
  DevicePtr kv_array(int64_t half, bool scales) const;
  absl::Status prepare_ops();
  /// Writes the address tables (PlanWorkspace::addresses) and marks the persistent decode
  /// kernel's launch and stages among ops_, sizing its grid from the occupancy.
  absl::Status prepare_persistent();
  absl::Status warm_up();
  /// Enqueues one PlanCollective on the stream through NCCL.
  absl::Status run_collective(const PlanCollective& c);
  absl::StatusOr<DevicePtr> address(std::string_view value) const;

  /// Checks the step against the plan's bounds and the pool, binds the symbols,
  /// and stages every input into the pinned mirror of the input buffer.
  absl::Status stage_inputs(const StepRequest& step);
  /// Enqueues the step's ops (those whose StepKind matches) on the stream.
  /// With `observer`, synchronizes after every op and reports node boundaries to it.
  absl::Status enqueue_ops(bool decode, bool checked, NodeObserver* observer = nullptr);
  absl::StatusOr<StepResult> run_step_impl(const StepRequest& step, NodeObserver* observer);
  /// The evaluated grids and integer arguments of the step's ops: two steps
  /// with equal signatures run identical launches, so one may replay the
  /// other's CUDA graph.
  absl::StatusOr<std::vector<int64_t>> launch_signature(bool decode) const;
  /// Whether `op` runs in the current step: its StepKind, then its StepBound (plan/plan.h).
  absl::StatusOr<bool> op_runs(const Op& op, bool decode) const;
  /// The StepKind part of op_runs: prefill / decode, and in a cascade step the PlanCascade
  /// launches in place of the plain decode launches they replace.
  bool step_kind_admits(const Op& op, bool decode) const;

  Plan plan_;
  TensorParallelRank tp_;     // rank 0 with no communicator for a one-GPU plan
  DeviceBuffer gather_rows_;  // all_gather of several rows: NCCL's rank-major result, reordered
  std::unique_ptr<Graph> graph_;
  std::unique_ptr<GpuDevice> device_;
  std::unique_ptr<GemmRunner> gemm_;
  bool debug_sync_ = false;
  bool cuda_graphs_ = true;

  std::vector<GpuKernel> kernels_;  // by Plan::kernels index
  DeviceBuffer weights_, arena_, constants_, workspaces_, kv_, inputs_;
  absl::flat_hash_map<std::string, DevicePtr> addresses_;  // every bound value and workspace
  std::vector<Op> ops_;
  std::vector<std::string> exprs_;  // the distinct integer expressions of ops_
  std::vector<InputRegion> regions_;
  void* host_inputs_ = nullptr;  // pinned mirror of inputs_
  int64_t staged_bytes_ = 0;     // bytes of the mirror the current step uses
  void* host_out_ = nullptr;     // pinned: sampled ids, then logits
  size_t host_out_bytes_ = 0;

  std::vector<std::pair<std::string, int64_t>> symbols_;  // bound for the current step
  std::vector<std::pair<std::string, int64_t>> symbol_bounds_;
  DevicePtr logits_ = 0, sampled_ids_ = 0;
  int64_t vocab_ = 0;

  int64_t kv_pages_ = 0;
  int64_t kv_page_bytes_ = 0;        // one page of one layer's K (or V) elements
  int64_t kv_scale_page_bytes_ = 0;  // the scales of one such page (fp8e4m3; else 0)
  int32_t kv_layers_ = 0;
  int64_t weight_bytes_ = 0;

  bool persistent_ = false;       // the plan has a persistent decode kernel and it is on
  int persistent_blocks_ = 0;     // its grid
  bool persistent_step_ = false;  // the current step runs it (in place of its stages)
  bool persistent_auto_ = false;  // warm_up times it against its stages and keeps the faster
  bool cascade_step_ = false;     // the current step runs the PlanCascade launches

  absl::flat_hash_map<std::vector<int64_t>, void*> graphs_;  // launch signature -> CUgraphExec
  CudaStepStats last_step_;
  std::string report_;
  std::unique_ptr<ValueNames> value_names_;  // download_value's names, made on first use
};

}  // namespace kiln
