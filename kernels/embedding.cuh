// Row gathers: token embedding lookup (table[ids[t]]) and each sequence's last token row
// (hidden[qo_indptr[s+1] - 1]) ahead of the LM head. Pure data movement, 16-byte vectors.
#pragma once

#include "common.cuh"

namespace kiln_k {

/// out[i, :] = table[index(i), :] for rows of H elements, VEC elements per 16-byte access. An
/// index outside [0, num_rows) yields a zero row rather than reading out of bounds.
template <class T, int H, int VEC, bool LAST_TOKEN>
__device__ __forceinline__ void gather_rows(T* __restrict__ out, const T* __restrict__ table,
                                            const int* __restrict__ indices, int num_out,
                                            int num_rows) {
  static_assert(H % VEC == 0, "rows are whole vectors");
  struct alignas(VEC * sizeof(T)) Vec {
    T v[VEC];
  };
  constexpr int kVecs = H / VEC;
  const long long n = (long long)num_out * kVecs;
  for (long long i = task_block().x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)task_grid().x * blockDim.x) {
    const int r = i / kVecs, c = i % kVecs;
    // LAST_TOKEN: `indices` is qo_indptr[S + 1] and row s takes the sequence's last token.
    const int src = LAST_TOKEN ? indices[r + 1] - 1 : indices[r];
    Vec val;
    if (src >= 0 && src < num_rows) {
      val = reinterpret_cast<const Vec*>(table)[(long long)src * kVecs + c];
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) val.v[e] = from_float<T>(0.f);
    }
    reinterpret_cast<Vec*>(out)[i] = val;
  }
}

}  // namespace kiln_k
