// ReferenceBackend: the CPU Backend. It parses a plan's final IR (no passes, no recompile), maps
// the weights the plan references and converts them to the IR params' dtype, keeps the paged KV
// storage in host memory, and runs each step through the ReferenceExecutor. A tensor-parallel
// plan runs all its ranks in this process: each rank's weight slices and KV cache, the
// collectives as sums and concatenations over the ranks' buffers.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "models/mapped_file.h"
#include "plan/plan_file.h"
#include "runtime/backend.h"
#include "runtime/reference/executor.h"
#include "runtime/reference/host_tensor.h"
#include "runtime/reference/sampler.h"

namespace kiln {

class ReferenceBackend : public Backend {
 public:
  /// Loads `plan` for the CPU. Every IR param must have a PlanWeight with the param's shape;
  /// referenced weight files are mapped and checked (present, large enough, and with
  /// `options.verify_weights` their xxh3), then converted to the param's dtype (f32, bf16 or
  /// f16), or, with `options.native_weights`, GGUF block types kept as stored. A missing or
  /// changed weight file is FailedPrecondition naming the file and the
  /// `kiln compile` command that rebuilds the plan. Packed weights are read through `blobs`.
  static absl::StatusOr<std::unique_ptr<ReferenceBackend>> create(
      const Plan& plan, const BackendOptions& options = {}, const PlanBlobReader& blobs = nullptr);
  /// create() over a plan read from a .kplan file (its packed weights are the file's blobs);
  /// `plan` must outlive the backend.
  static absl::StatusOr<std::unique_ptr<ReferenceBackend>> create(
      const LoadedPlan& plan, const BackendOptions& options = {});
  ~ReferenceBackend() override;

  std::string name() const override { return "cpu"; }
  const Plan& plan() const override { return plan_; }
  int64_t kv_pages() const override { return kv_pages_; }
  std::string load_report() const override;
  absl::Status copy_kv_pages(absl::Span<const PageCopy> copies) override;
  absl::StatusOr<StepResult> run_step(const StepRequest& step) override;

  /// Layer `layer`'s K (or V) storage on tensor-parallel rank `rank`, f32[kv_pages, page_size,
  /// kv_heads, head_dim] (the graph's cache input layout: a rank's own KV heads); null for a layer
  /// or rank out of range.
  float* k_data(int32_t layer, int rank = 0);
  float* v_data(int32_t layer, int rank = 0);
  /// Layer `layer`'s K (or V) scale array f32[kv_pages, page_size, kv_heads] (an fp8e4m3 cache)
  /// on rank `rank`; null for a layer or rank out of range or a cache without scales.
  float* k_scales(int32_t layer, int rank = 0);
  float* v_scales(int32_t layer, int rank = 0);
  /// Floats of one page of one layer's K (or V): page_size * kv_heads * head_dim.
  int64_t floats_per_page() const;
  /// Scales of one page of one layer's K (or V): page_size * kv_heads, 0 without scales.
  int64_t scales_per_page() const;
  /// The plan's IR as the executor runs it.
  const Graph& graph() const { return executor_->graph(); }
  /// Rank 0's weights as loaded (the executor's views; `kiln run --check` runs single nodes on
  /// them).
  const ParamViews& params() const { return params_[0]; }
  /// Bytes of weights one step reads, in their compute dtype (over every rank of a
  /// tensor-parallel plan, each weight every rank holds counted once).
  int64_t weight_bytes() const { return weight_bytes_; }
  /// Tensor-parallel ranks the plan runs on (all of them in this process).
  int ranks() const { return static_cast<int>(params_.size()); }

 private:
  struct HostArray;
  ReferenceBackend() = default;
  absl::Status load_weights(const Graph& graph, const BackendOptions& options,
                            const PlanBlobReader& blobs);
  absl::Status allocate_kv(const BackendOptions& options);
  /// Host bytes of one page over all layers: f32 elements, and f32 scales for fp8e4m3.
  int64_t host_bytes_per_page() const;

  Plan plan_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::vector<std::vector<uint8_t>> converted_;  // weights converted from their stored dtype
  std::vector<ParamViews> params_;               // by tensor-parallel rank
  int64_t weight_bytes_ = 0;
  std::unique_ptr<ReferenceExecutor> executor_;
  int64_t kv_pages_ = 0;
  std::vector<HostArray> k_, v_;                // [rank * layers + layer]
  std::vector<HostArray> k_scales_, v_scales_;  // likewise, fp8e4m3 caches only
  Sampler sampler_;
};

}  // namespace kiln
