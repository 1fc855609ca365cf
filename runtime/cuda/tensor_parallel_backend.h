// TensorParallelBackend: a tensor-parallel plan (kiln compile --tp N) on N GPUs of one host. One
// thread per GPU owns that rank's CudaBackend (its context, stream, weights, KV pool and CUDA
// graphs); the ranks' communicator comes from one NCCL unique id, each thread joining with
// ncclCommInitRank. A step runs on every rank at once (the collectives inside each rank's step
// are where they meet); every rank samples the same tokens from the same gathered logits, and
// the engine gets rank 0's.
//
// UNTESTED on GPUs: it was written on a machine without any, and no multi-GPU machine was
// available; it compiles, and its CPU-side checks (plans, arguments) are what the tests reach.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/backend.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/nccl.h"

namespace kiln {

class TensorParallelBackend : public Backend {
 public:
  /// Loads `plan` (plan.ranks > 1) onto GPUs 0 .. ranks-1. Unavailable without NCCL or with
  /// fewer GPUs than ranks; other errors name the rank.
  static absl::StatusOr<std::unique_ptr<TensorParallelBackend>> create(
      const Plan& plan, const BackendOptions& options, const PlanBlobReader& blobs);
  ~TensorParallelBackend() override;

  std::string name() const override;
  const Plan& plan() const override { return plan_; }
  /// The smallest rank's pool: a page id is valid on every rank.
  int64_t kv_pages() const override { return kv_pages_; }
  std::string load_report() const override { return report_; }
  absl::Status copy_kv_pages(absl::Span<const PageCopy> copies) override;
  absl::StatusOr<StepResult> run_step(const StepRequest& step) override;

 private:
  class Worker;  // one GPU's thread
  TensorParallelBackend() = default;
  /// Runs `job(rank)` on every rank's thread at once and waits for all; the first error, with
  /// its rank.
  absl::Status on_every_rank(const std::function<absl::Status(int rank)>& job);

  Plan plan_;
  std::shared_ptr<const Nccl> nccl_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::unique_ptr<GpuDevice>> devices_;  // by rank: holds each primary context
  std::vector<NcclComm> comms_;                      // by rank
  std::vector<std::unique_ptr<CudaBackend>> ranks_;  // by rank, each used on its own thread
  int64_t kv_pages_ = 0;
  std::string report_;
};

}  // namespace kiln
