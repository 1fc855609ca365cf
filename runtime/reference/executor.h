// ReferenceExecutor: runs any verified kiln graph (primitive or fused) on the CPU in fp32. It is
// the numerical oracle of every test and the backend of `kiln run` on machines without a GPU.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ir/graph.h"
#include "runtime/reference/host_tensor.h"
#include "runtime/reference/thread_pool.h"

namespace kiln {

/// Whether operand `operand` of `node` is a KV cache (kv_write's cache, paged_qk's K, paged_pv's
/// V, flash_attention's K and V): bound through InputBindings::caches and updated in place.
bool is_kv_cache_operand(const Node& node, size_t operand);

/// Interprets a graph node by node. Float dtypes are computed and stored as fp32 (a `cast`
/// between float dtypes is the identity), index dtypes as int32; weights stay in their file dtype
/// (f32/bf16/f16) and are widened on the fly. Intermediates are freed after their last reader.
///
/// Symbols are bound per run: from InputBindings::symbols first, then from the lengths of the
/// bound inputs (`T` from tokens[T], `S` from qo_indptr[S+1], ...), and a paged_qk's `kv_dim`
/// symbol (K), if still unbound, as the longest KV length of the step computed from the page
/// metadata: kv_len(s) = (pages(s) - 1) * PS + kv_last_page_len[s]. Every bound symbol must be
/// within its declared upper bound.
///
/// Not thread-safe: one run() at a time.
class ReferenceExecutor {
 public:
  /// Verifies `graph` (the executor keeps its own copy) and checks that `params` binds exactly
  /// the graph's params, each with the declared dtype (f32, bf16 or f16) and shape. The weight
  /// memory must outlive the executor. `num_threads` 0 means the hardware concurrency.
  /// `quantize_activations`: matmuls by Q8_0/Q4_0/Q4_1 params round x to 8-bit codes (matmul.h).
  static absl::StatusOr<std::unique_ptr<ReferenceExecutor>> create(
      const Graph& graph, ParamViews params, int num_threads = 0,
      bool quantize_activations = false);
  /// create() for a tensor-parallel graph (`ranks N`): `rank_params[r]` binds rank r's params
  /// (its weight slices; a param every rank holds whole may point at the same bytes in each).
  /// There must be one entry per rank of the graph.
  static absl::StatusOr<std::unique_ptr<ReferenceExecutor>> create_ranks(
      const Graph& graph, std::vector<ParamViews> rank_params, int num_threads = 0,
      bool quantize_activations = false);
  ~ReferenceExecutor();

  /// Runs one step and returns the graph outputs in order. KV caches bound in `inputs.caches` are
  /// updated in place. Errors (missing/extra/mis-shaped bindings, out-of-range indices,
  /// inconsistent page metadata) name the input or the op and leave no partial outputs.
  /// For a graph of one rank.
  absl::StatusOr<std::vector<HostTensor>> run(const InputBindings& inputs);
  /// Runs one step of every rank of a tensor-parallel graph in this process: the ranks execute
  /// each node in turn (rank 0 first), and a collective combines the ranks' buffers (all_reduce
  /// sums them in rank order, all_gather concatenates them). `rank_inputs[r]` binds rank r's
  /// inputs (its own KV caches). Returns rank 0's outputs.
  absl::StatusOr<std::vector<HostTensor>> run_ranks(absl::Span<const InputBindings> rank_inputs);

  const Graph& graph() const { return *graph_; }
  int num_threads() const { return pool_->num_threads(); }

 private:
  struct Slot;
  struct RunState;
  ReferenceExecutor() = default;
  absl::Status bind_inputs(const InputBindings& inputs, RunState& st) const;
  absl::Status bind_params(int rank, RunState& st) const;
  absl::Status execute(const Node& node, RunState& st);
  /// all_reduce / all_gather over every rank's state.
  absl::Status collective(const Node& node, std::vector<RunState>& ranks);
  /// The zero-filled float buffer of result `v` (its shape already resolved in `st`).
  float* alloc_floats(RunState& st, const Value* v);

  std::unique_ptr<Graph> graph_;
  std::vector<ParamViews> params_;                       // by rank
  std::vector<std::vector<HostTensor>> widened_params_;  // by rank, then value id; fp32 copies
                                                         // of small bf16/f16 params
  std::vector<int> last_use_;               // by value id: last node index reading it
  std::vector<bool> is_cache_input_;        // by value id
  std::vector<bool> is_output_;             // by value id
  std::unique_ptr<ThreadPool> pool_;
  bool quantize_activations_ = false;
  // Node result buffers kept across runs: a fresh multi-100-KB vector per node per step is an
  // mmap + page faults + zeroing (the logits alone are 196 KB); reusing them makes it a memset.
  std::vector<std::vector<float>> spare_f_;
  std::vector<std::vector<int32_t>> spare_i_;
  // KILN_REFERENCE_PROFILE=1: time per op kind (and the executor's own work) over all runs,
  // printed to stderr when the executor is destroyed.
  struct Profile;
  std::unique_ptr<Profile> profile_;
};

}  // namespace kiln
