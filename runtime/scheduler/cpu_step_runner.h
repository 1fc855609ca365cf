// CpuStepRunner: runs scheduled steps on the CPU reference executor of a CpuModel, whose K/V rows
// live in the PagedKvCache's host storage (KvStorage::kHost).
#pragma once

#include "runtime/cpu_model.h"
#include "runtime/kv_cache.h"
#include "runtime/scheduler/step_runner.h"

namespace kiln {

/// Makes the KV cache a CpuModel's steps bind: `num_pages` pages of the plan's page size, host
/// storage for every layer.
absl::StatusOr<PagedKvCache> make_cpu_kv_cache(const CpuModel& model, int64_t num_pages);

class CpuStepRunner : public StepRunner {
 public:
  /// `model` and `kv` (made by make_cpu_kv_cache) must outlive the runner.
  CpuStepRunner(CpuModel& model, PagedKvCache& kv) : model_(model), kv_(kv) {}

  absl::StatusOr<std::vector<int32_t>> run(const ScheduledStep& step,
                                           absl::Span<Sampler* const> samplers) override;

 private:
  CpuModel& model_;
  PagedKvCache& kv_;
};

}  // namespace kiln
