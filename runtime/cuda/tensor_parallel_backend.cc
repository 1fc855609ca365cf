// TensorParallelBackend (see tensor_parallel_backend.h). UNTESTED on GPUs.
#include "runtime/cuda/tensor_parallel_backend.h"

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"

namespace kiln {

/// One GPU's thread: runs the jobs given to it in order. A CUDA context is current per thread,
/// and NCCL's ncclCommInitRank must be called by every rank at once, so each rank's work stays on
/// its own thread for the backend's lifetime.
class TensorParallelBackend::Worker {
 public:
  Worker() : thread_([this] { loop(); }) {}
  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  std::future<absl::Status> post(std::function<absl::Status()> job) {
    auto task = std::make_shared<std::packaged_task<absl::Status()>>(std::move(job));
    std::future<absl::Status> done = task->get_future();
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back([task] { (*task)(); });
    }
    cv_.notify_one();
    return done;
  }

 private:
  void loop() {
    while (true) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping, nothing left
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::thread thread_;  // last: starts after the fields it reads exist
};

TensorParallelBackend::~TensorParallelBackend() {
  // Each rank's backend and communicator are released on its own thread (its context current).
  for (size_t r = 0; r < workers_.size(); ++r) {
    workers_[r]
        ->post([this, r] {
          if (r < ranks_.size()) ranks_[r].reset();
          if (r < comms_.size()) comms_[r] = NcclComm();
          if (r < devices_.size()) devices_[r].reset();
          return absl::OkStatus();
        })
        .wait();
  }
  workers_.clear();
}

std::string TensorParallelBackend::name() const { return absl::StrCat("cuda x", plan_.ranks); }

absl::Status TensorParallelBackend::on_every_rank(
    const std::function<absl::Status(int rank)>& job) {
  std::vector<std::future<absl::Status>> done;
  for (size_t r = 0; r < workers_.size(); ++r) {
    done.push_back(workers_[r]->post([&job, r] { return job(static_cast<int>(r)); }));
  }
  absl::Status first;
  for (size_t r = 0; r < done.size(); ++r) {
    absl::Status s = done[r].get();
    if (!s.ok() && first.ok()) {
      first = absl::Status(s.code(), absl::StrCat("rank ", r, ": ", s.message()));
    }
  }
  return first;
}

absl::StatusOr<std::unique_ptr<TensorParallelBackend>> TensorParallelBackend::create(
    const Plan& plan, const BackendOptions& options, const PlanBlobReader& blobs) {
  if (plan.ranks < 2) {
    return absl::InvalidArgumentError("TensorParallelBackend runs plans of 2 or more ranks");
  }
  absl::StatusOr<std::shared_ptr<const Nccl>> nccl = Nccl::load();
  if (!nccl.ok()) return nccl.status();
  absl::StatusOr<NcclUniqueId> id = (*nccl)->unique_id();
  if (!id.ok()) return id.status();
  std::unique_ptr<TensorParallelBackend> b(new TensorParallelBackend());
  b->plan_ = plan;
  b->nccl_ = *nccl;
  b->devices_.resize(plan.ranks);
  b->comms_.resize(plan.ranks);
  b->ranks_.resize(plan.ranks);
  for (int r = 0; r < plan.ranks; ++r) b->workers_.push_back(std::make_unique<Worker>());
  TensorParallelBackend* self = b.get();
  // Each thread: its GPU's context current (and kept: the communicator lives in it), then all
  // ranks join the communicator together.
  absl::Status joined = b->on_every_rank([&](int r) -> absl::Status {
    absl::StatusOr<GpuDevice> gpu = open_gpu(r);
    if (!gpu.ok()) {
      return absl::UnavailableError(
          absl::StrCat("the plan needs ", self->plan_.ranks, " GPUs: ", gpu.status().message()));
    }
    self->devices_[r] = std::make_unique<GpuDevice>(std::move(*gpu));
    absl::StatusOr<NcclComm> comm = self->nccl_->init_rank(*id, r, self->plan_.ranks);
    if (!comm.ok()) return comm.status();
    self->comms_[r] = std::move(*comm);
    return absl::OkStatus();
  });
  if (!joined.ok()) return joined;
  // Then every rank's backend at once: each one's warm-up step meets the others' collectives.
  absl::Status loaded = b->on_every_rank([&](int r) -> absl::Status {
    CudaBackend::TensorParallelRank tp;
    tp.rank = r;
    tp.nccl = self->nccl_;
    tp.comm = &self->comms_[r];
    absl::StatusOr<std::unique_ptr<CudaBackend>> rank =
        CudaBackend::create_rank(self->plan_, options, blobs, tp);
    if (!rank.ok()) return rank.status();
    self->ranks_[r] = std::move(*rank);
    return absl::OkStatus();
  });
  if (!loaded.ok()) return loaded;
  b->kv_pages_ = b->ranks_[0]->kv_pages();
  for (const auto& r : b->ranks_) b->kv_pages_ = std::min(b->kv_pages_, r->kv_pages());
  b->report_ =
      absl::StrCat(plan.ranks, " GPUs, tensor-parallel over NCCL ", b->nccl_->version(), " (",
                   b->kv_pages_, " KV pages per rank); rank 0: ", b->ranks_[0]->load_report());
  return b;
}

absl::Status TensorParallelBackend::copy_kv_pages(absl::Span<const PageCopy> copies) {
  return on_every_rank([&](int r) { return ranks_[r]->copy_kv_pages(copies); });
}

absl::StatusOr<StepResult> TensorParallelBackend::run_step(const StepRequest& step) {
  std::vector<StepResult> results(ranks_.size());
  absl::Status s = on_every_rank([&](int r) -> absl::Status {
    absl::StatusOr<StepResult> out = ranks_[r]->run_step(step);
    if (!out.ok()) return out.status();
    results[r] = *std::move(out);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  // Every rank sampled from the same gathered logits with the same draws: a rank that disagrees
  // means the collectives did not make the logits whole.
  for (size_t r = 1; r < results.size(); ++r) {
    if (results[r].tokens != results[0].tokens) {
      return absl::InternalError(absl::StrCat("rank ", r,
                                              " sampled other tokens than rank 0: the "
                                              "ranks' logits differ"));
    }
  }
  return std::move(results[0]);
}

}  // namespace kiln
