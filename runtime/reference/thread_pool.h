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

  /// Splits [0, n) into contiguous chunks of at least `min_chunk` items and calls fn(begin, end)
  /// on each; returns when all are done. Chunks are claimed dynamically and the caller works
  /// too, so a worker the OS schedules late (shared cores) delays the call by at most one chunk.
  /// Not reentrant: fn must not call parallel_for.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                    int64_t min_chunk = 1);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  struct Job {
    const std::function<void(int64_t, int64_t)>* fn;
    int64_t n;
    int64_t chunks;
    std::atomic<int64_t> next{0};  // next chunk to claim
    std::atomic<int64_t> done{0};  // chunks finished
  };
  static void run_chunks(Job& job);

  // A job is published by bumping generation_ and setting job_ (under mu_); the caller clears
  // job_ and waits for active_ == 0 before its stack-allocated Job dies.
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> active_{0};
  Job* job_ = nullptr;
  bool stop_ = false;
};

}  // namespace kiln
