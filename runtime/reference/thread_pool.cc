// ThreadPool: workers spin briefly on the job generation before sleeping, because decode issues
// many short parallel regions back to back and a condition-variable wake costs tens of µs.
#include "runtime/reference/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KILN_CPU_RELAX() _mm_pause()
#else
#define KILN_CPU_RELAX() ((void)0)
#endif

namespace kiln {
namespace {
constexpr int kSpinIterations = 4000;  // tens of µs of polling before blocking
}

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0)
    num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i + 1 < num_threads; ++i) {
    workers_.emplace_back([this, i] { worker_loop(i); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::run_chunks(Job& job) {
  for (int64_t c = job.next.fetch_add(1); c < job.chunks; c = job.next.fetch_add(1)) {
    (*job.fn)(job.n * c / job.chunks, job.n * (c + 1) / job.chunks);
    job.done.fetch_add(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                              int64_t min_chunk) {
  if (n <= 0) return;
  // A few chunks per thread: enough to balance a late worker, few enough to keep chunks long.
  const int64_t chunks = std::min<int64_t>(
      4 * num_threads(), std::max<int64_t>(1, n / std::max<int64_t>(1, min_chunk)));
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  Job job{&fn, n, chunks};
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &job;
    generation_.fetch_add(1);
  }
  work_cv_.notify_all();
  run_chunks(job);
  auto finished = [&] {
    return job.done.load(std::memory_order_acquire) == chunks && active_.load() == 0;
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = nullptr;  // workers that wake from now on find nothing to do
  }
  for (int spin = 0; !finished() && spin < kSpinIterations; ++spin) KILN_CPU_RELAX();
  if (!finished()) {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, finished);
  }
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  while (true) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int spin = 0; gen == seen && spin < kSpinIterations; ++spin) {
      KILN_CPU_RELAX();
      gen = generation_.load(std::memory_order_acquire);
    }
    Job* job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || generation_.load() != seen; });
      if (stop_) return;
      seen = generation_.load();
      job = job_;
      if (job != nullptr) active_.fetch_add(1);
    }
    if (job != nullptr) {
      run_chunks(*job);
      std::lock_guard<std::mutex> lock(mu_);
      active_.fetch_sub(1);
      done_cv_.notify_all();
    }
  }
}

}  // namespace kiln
