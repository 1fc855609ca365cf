// A persistent worker pool with a blocking parallel_for over index ranges: the reference backend
// calls it hundreds of times per decode step, so workers live for the executor's lifetime.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln {

class ThreadPool {
 public:
  /// `num_threads` counts the calling thread; 0 means std::thread::hardware_concurrency().
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  /// Splits [0, n) into at most num_threads() contiguous chunks of at least `min_chunk` items and
  /// calls fn(begin, end) on each, the caller running one; returns when all are done. Not
  /// reentrant: fn must not call parallel_for.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                    int64_t min_chunk = 1);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  // A job is published by bumping generation_; workers whose index < job_chunks_ - 1 take chunk
  // index + 1 (the caller runs chunk 0).
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int job_chunks_ = 0;
  bool stop_ = false;
};

}  // namespace kiln
