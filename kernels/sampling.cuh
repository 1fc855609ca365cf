// Token sampling on the GPU, one block per sequence row of logits: greedy, temperature, top-k and
// top-p with a uniform random number per row supplied by the caller (so a seeded host RNG makes
// runs reproducible and the CPU sampler can replay the same draw).
//
// Instead of sorting the vocabulary, the kept set {i : logit_i >= tau} is found by bisection on
// the threshold tau, each step one block-wide count/mass reduction (the sort-free idea of
// FlashInfer's sampling kernels, in its simplest form). Ties at the threshold are all kept.
#pragma once

#include "common.cuh"

namespace kiln_k {

template <int THREADS>
struct SampleScratch {
  float red[THREADS / 32];
  float prefix[THREADS];
};

/// Sum over the block of f(logit) for logits >= tau (f = 1: count, f = exp: mass).
template <int THREADS, bool MASS>
__device__ __forceinline__ float kept_reduce(const float* row, int vocab, float tau, float max_l,
                                             float inv_temp, float* red) {
  float acc = 0.f;
  for (int i = threadIdx.x; i < vocab; i += THREADS) {
    const float l = row[i];
    if (l >= tau) acc += MASS ? exp2f((l - max_l) * inv_temp * 1.4426950408889634f) : 1.f;
  }
  return block_sum<THREADS>(acc, red);
}

/// out[s] = sampled token id of logits[s, :] (f32 [S, vocab]). temperature[s] <= 0 or top_k[s]
/// == 1 means greedy (lowest index among equal maxima); top_k[s] <= 0 disables top-k; top_p[s]
/// >= 1 disables top-p; uniform[s] in [0, 1).
template <int THREADS>
__device__ __forceinline__ void sample_rows(int* __restrict__ out, const float* __restrict__ logits,
                                            const float* __restrict__ temperature,
                                            const int* __restrict__ top_k,
                                            const float* __restrict__ top_p,
                                            const float* __restrict__ uniform, int vocab) {
  __shared__ SampleScratch<THREADS> sh;
  __shared__ int chosen;
  const int s = blockIdx.x;
  const float* row = logits + (long long)s * vocab;

  // Greedy pass (also gives the max for the softmax): argmax with the lowest index on ties.
  float best = neg_inf();
  int best_i = 0x7fffffff;
  for (int i = threadIdx.x; i < vocab; i += THREADS) {
    if (row[i] > best) best = row[i], best_i = i;
  }
  const float max_l = block_max<THREADS>(best, sh.red);
  if (threadIdx.x == 0) chosen = 0x7fffffff;
  __syncthreads();
  if (best == max_l) atomicMin(&chosen, best_i);
  __syncthreads();
  const int greedy = chosen;  // read before the block reductions below (they synchronize)
  const float temp = temperature[s];
  if (temp <= 0.f || top_k[s] == 1) {
    if (threadIdx.x == 0) out[s] = greedy;
    return;
  }
  const float inv_temp = 1.f / temp;

  // Lowest logit, the bisection's lower end.
  float lo_local = -neg_inf();
  for (int i = threadIdx.x; i < vocab; i += THREADS) lo_local = fminf(lo_local, row[i]);
  float lo = -block_max<THREADS>(-lo_local, sh.red);
  float tau = lo;
  // top-k: the largest tau whose kept count is still >= k.
  const int k = top_k[s];
  if (k > 0 && k < vocab) {
    float a = lo, b = max_l;
    for (int it = 0; it < 32; ++it) {
      const float mid = 0.5f * (a + b);
      if (kept_reduce<THREADS, false>(row, vocab, mid, max_l, inv_temp, sh.red) >= k) {
        a = mid;
      } else {
        b = mid;
      }
    }
    tau = a;
  }
  // top-p over what top-k kept: the largest tau whose kept mass is still >= p * kept mass.
  const float p = top_p[s];
  const float total = kept_reduce<THREADS, true>(row, vocab, tau, max_l, inv_temp, sh.red);
  if (p < 1.f) {
    float a = tau, b = max_l;
    for (int it = 0; it < 32; ++it) {
      const float mid = 0.5f * (a + b);
      if (kept_reduce<THREADS, true>(row, vocab, mid, max_l, inv_temp, sh.red) >= p * total) {
        a = mid;
      } else {
        b = mid;
      }
    }
    tau = a;
  }
  const float kept = kept_reduce<THREADS, true>(row, vocab, tau, max_l, inv_temp, sh.red);

  // Inverse CDF in index order: each thread owns a contiguous slice; a block prefix sum over the
  // slices' masses finds the slice holding u * kept, then that thread walks it.
  const int per = (vocab + THREADS - 1) / THREADS;
  const int begin = threadIdx.x * per, end = min(vocab, begin + per);
  float mass = 0.f;
  for (int i = begin; i < end; ++i) {
    if (row[i] >= tau) mass += exp2f((row[i] - max_l) * inv_temp * 1.4426950408889634f);
  }
  sh.prefix[threadIdx.x] = mass;
  __syncthreads();
  for (int off = 1; off < THREADS; off <<= 1) {  // Hillis-Steele inclusive scan
    const float add = threadIdx.x >= off ? sh.prefix[threadIdx.x - off] : 0.f;
    __syncthreads();
    sh.prefix[threadIdx.x] += add;
    __syncthreads();
  }
  const float target = uniform[s] * kept;
  const float before = sh.prefix[threadIdx.x] - mass;
  if (threadIdx.x == 0) chosen = -1;
  __syncthreads();
  if (mass > 0.f && target >= before && target < before + mass) {
    float acc = before;
    int pick = -1;
    for (int i = begin; i < end; ++i) {
      if (row[i] < tau) continue;
      pick = i;
      acc += exp2f((row[i] - max_l) * inv_temp * 1.4426950408889634f);
      if (acc > target) break;
    }
    atomicMax(&chosen, pick);
  }
  __syncthreads();
  // Rounding can leave target just past the last slice: fall back to the argmax.
  if (threadIdx.x == 0) out[s] = chosen >= 0 ? chosen : greedy;
}

}  // namespace kiln_k
