// The task loop of the persistent decode kernel (codegen/families/persistent_decode.h). One launch
// of as many blocks as the GPU holds at once runs a whole decode step: the blocks of the step's
// launches ("stages", in program order) become tasks, numbered stage by stage, and resident block b
// takes tasks b, b + gridDim.x, ... in order. A task of stage s starts once every task of stage
// s - 1 has finished (a counter per stage in global memory, the cooperative-groups grid-barrier
// recipe: writes, __syncthreads, a fence and an atomic add by one thread; a spinning read, a
// fence, __syncthreads), so the step's data flow is what a stream of launches gives — stage s - 1
// finished means every earlier stage finished — without a kernel boundary between ops. Before it
// waits, a task asks L2 for the weights it will stream (GEMV stages), so the weight stream goes on
// while the stage before finishes: the launch gap and the tail of each op overlap the next op's
// loads (Hazy Research's "No Bubbles", Mirage's persistent kernels).
//
// No deadlock: every block is resident (the runtime sizes the grid from the occupancy), and each
// takes its tasks in increasing order, so the lowest task still waiting depends only on lower
// tasks, all of which have finished. A wait that still has not ended after ~2 s means a bug; it
// traps, which the runtime reports as a failed step instead of a hung GPU.
#pragma once

#ifndef KILN_PERSISTENT
#define KILN_PERSISTENT 1
#endif
#include "common.cuh"

namespace kiln_k {

__device__ __forceinline__ unsigned long long global_timer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

/// Spins (one thread) until *counter >= target, then fences: what the counter's writers wrote
/// before they counted is visible to this block after its next __syncthreads.
__device__ __forceinline__ void wait_for_count(const int* counter, int target) {
  const volatile int* c = counter;
  if (*c < target) {
    const unsigned long long t0 = global_timer_ns();
    while (*c < target) {
      __nanosleep(32);
      if (global_timer_ns() - t0 > 2000000000ull) __trap();
    }
  }
  __threadfence();
}

/// Runs the tasks of STAGES stages on this resident block. grid_of(s): stage s's launch grid
/// (uint3, from the step's integer arguments); prefetch(s) and run(s) are called by every thread
/// of the block with the task's coordinates in task_block() / task_grid(). counters[0..STAGES]
/// are zero when the launch begins; the last block to finish puts them back to zero.
template <int STAGES, class GridOf, class Prefetch, class Run>
__device__ __forceinline__ void persistent_tasks(int* counters, const GridOf& grid_of,
                                                 const Prefetch& prefetch, const Run& run) {
  int stage = 0;
  uint3 grid = grid_of(0);
  long long first = 0, count = (long long)grid.x * grid.y * grid.z, before = 0;
  for (long long task = blockIdx.x;; task += gridDim.x) {
    // The stage of this task; `before` is the task count of the stage before it.
    while (stage < STAGES && task >= first + count) {
      first += count;
      before = count;
      if (++stage < STAGES) {
        grid = grid_of(stage);
        count = (long long)grid.x * grid.y * grid.z;
      }
    }
    if (stage == STAGES) break;
    const long long local = task - first;
    if (threadIdx.x == 0) {
      kiln_task_grid = grid;
      kiln_task_block.x = static_cast<unsigned>(local % grid.x);
      kiln_task_block.y = static_cast<unsigned>((local / grid.x) % grid.y);
      kiln_task_block.z = static_cast<unsigned>(local / ((long long)grid.x * grid.y));
    }
    __syncthreads();
    if (stage > 0) {
      prefetch(stage);
      if (threadIdx.x == 0) wait_for_count(counters + stage - 1, static_cast<int>(before));
    }
    __syncthreads();
    run(stage);
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(counters + stage, 1);
    }
  }
  // The last block out: every other block has counted its last task and waits on nothing more.
  if (threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(counters + STAGES, 1) == static_cast<int>(gridDim.x) - 1) {
      for (int s = 0; s <= STAGES; ++s) atomicExch(counters + s, 0);
      __threadfence();
    }
  }
}

}  // namespace kiln_k
