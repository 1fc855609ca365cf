// Cascade decode attention on the CPU: the shared prefix and each sequence's suffix as separate
// partial softmaxes, combined by the log-sum-exp merge, as the GPU's cascade kernels compute it
// (kernels/cascade_attention.cuh). It must equal plain paged attention (flash_attention in
// ops.h) up to rounding: the test that the two-level decomposition is exact.
#pragma once

#include "absl/status/status.h"
#include "runtime/kv/cascade_layout.h"
#include "runtime/reference/ops.h"

namespace kiln {

/// out[s, h] = softmax(scale · q[s, h]·kᵀ) · v over sequence s's KV, computed as: for members of
/// `layout`, a partial (max, sum, output) over the prefix KV [0, prefix_len) read through
/// layout.prefix_pages, a partial over the suffix [kv_start[s], kv_len(s)) read through the
/// sequence's own pages, and their merge by weights exp(m_i - max m). q: [S, Hq, D] (a decode
/// step: one token per sequence); caches [NP, PS, Hkv, D] (fp8e4m3 codes with scales [NP * PS,
/// Hkv] allowed); out: [S, Hq, D]. InvalidArgument when the layout does not fit the batch.
absl::Status cascade_attention(const FView& q, const KvCacheView& k_cache,
                               const KvCacheView& v_cache, const PagedBatch& batch,
                               const CascadeLayout& layout, double scale, float* out);

}  // namespace kiln
