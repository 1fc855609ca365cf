// Paged attention on the CPU: page-table validation, kv_write, paged_qk, causal_mask, paged_pv,
// and flash_attention as an online-softmax loop (the algorithm the GPU kernel implements).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "models/dequantize.h"
#include "runtime/reference/fast_exp.h"
#include "runtime/reference/ops.h"
#include "runtime/reference/thread_pool.h"

namespace kiln {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

absl::Status bad(auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); }

// Eight independent partial sums: a single running sum is one long dependency chain the compiler
// may not reorder (FP addition is not associative), so it neither vectorizes nor pipelines.
float dot(const float* a, const float* b, int64_t n) {
  constexpr int kLanes = 8;
  float part[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) part[l] += a[i + l] * b[i + l];
  }
  float s = ((part[0] + part[1]) + (part[2] + part[3])) +
            ((part[4] + part[5]) + (part[6] + part[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Checks a CSR offsets array: first entry 0, non-decreasing, last entry <= limit (== if exact).
absl::Status check_indptr(const IView& p, const char* name, int64_t limit, bool exact) {
  if (p.data[0] != 0) return bad(name, "[0] = ", p.data[0], ", expected 0");
  for (int64_t i = 1; i < p.numel(); ++i) {
    if (p.data[i] < p.data[i - 1]) {
      return bad(name, " decreases at [", i, "]: ", p.data[i - 1], " then ", p.data[i]);
    }
  }
  const int64_t last = p.data[p.numel() - 1];
  if (exact ? last != limit : last > limit) {
    return bad(name, "[", p.numel() - 1, "] = ", last, exact ? ", expected " : " exceeds ", limit);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status check_positions(const IView& positions);

absl::StatusOr<PagedBatch> make_paged_batch(const IView& qo_indptr, const IView& kv_page_indptr,
                                            const IView& kv_page_indices,
                                            const IView& kv_last_page_len, int64_t num_tokens,
                                            int64_t num_pool_pages, int64_t page_size) {
  const int64_t seqs = kv_last_page_len.numel();
  if (qo_indptr.numel() != seqs + 1 || kv_page_indptr.numel() != seqs + 1) {
    return bad("qo_indptr (", qo_indptr.numel(), " entries) and kv_page_indptr (",
               kv_page_indptr.numel(), ") must have S+1 entries for kv_last_page_len's S = ", seqs);
  }
  if (absl::Status s = check_indptr(qo_indptr, "qo_indptr", num_tokens, true); !s.ok()) return s;
  if (absl::Status s =
          check_indptr(kv_page_indptr, "kv_page_indptr", kv_page_indices.numel(), false);
      !s.ok()) {
    return s;
  }
  PagedBatch b;
  b.num_seqs = seqs;
  b.page_size = page_size;
  b.page_indptr.assign(kv_page_indptr.data, kv_page_indptr.data + seqs + 1);
  b.page_indices.assign(kv_page_indices.data, kv_page_indices.data + kv_page_indices.numel());
  for (int64_t i = 0; i < kv_page_indptr.data[seqs]; ++i) {
    if (b.page_indices[i] < 0 || b.page_indices[i] >= num_pool_pages) {
      return absl::OutOfRangeError(absl::StrCat("kv_page_indices[", i, "] = ", b.page_indices[i],
                                                " is out of range [0, ", num_pool_pages, ")"));
    }
  }
  b.kv_len.resize(seqs);
  b.seq_of_token.assign(num_tokens, -1);
  for (int64_t s = 0; s < seqs; ++s) {
    const int64_t pages = b.page_indptr[s + 1] - b.page_indptr[s];
    const int64_t last = kv_last_page_len.data[s];
    if (pages == 0 ? last != 0 : (last < 1 || last > page_size)) {
      return bad("kv_last_page_len[", s, "] = ", last, " must be in [1, ", page_size,
                 "] (0 for a sequence without pages); sequence ", s, " has ", pages, " pages");
    }
    b.kv_len[s] = pages == 0 ? 0 : (pages - 1) * page_size + last;
    b.max_kv_len = std::max(b.max_kv_len, b.kv_len[s]);
    if (qo_indptr.data[s + 1] > qo_indptr.data[s] && b.kv_len[s] == 0) {
      return bad("sequence ", s, " has query tokens but no KV (its attention row would be empty)");
    }
    for (int64_t t = qo_indptr.data[s]; t < qo_indptr.data[s + 1]; ++t) b.seq_of_token[t] = s;
  }
  return b;
}

float quantize_row_fp8e4m3(const float* x, int64_t n, float* codes) {
  float amax = 0;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  if (amax == 0) {
    std::fill(codes, codes + n, 0.0f);
    return 0;
  }
  const float inv = kFp8E4M3Max / amax;  // x * inv lies in [-448, 448] (or rounds just past it:
                                         // the conversion saturates)
  for (int64_t i = 0; i < n; ++i) codes[i] = fp8e4m3_to_f32(f32_to_fp8e4m3(x[i] * inv));
  return amax / kFp8E4M3Max;
}

absl::Status kv_write(const KvCacheView& cache, const FView& rows, const IView& slot_mapping) {
  const int64_t slots = cache.shape[0] * cache.shape[1];
  const int64_t heads = cache.shape[2], d = cache.shape[3], row = heads * d;
  for (int64_t t = 0; t < rows.shape[0]; ++t) {
    const int64_t slot = slot_mapping.data[t];
    if (slot < 0) continue;  // padding token: nothing to write
    if (slot >= slots) {
      return absl::OutOfRangeError(absl::StrCat("slot_mapping[", t, "] = ", slot,
                                                " is outside the cache (NP*PS = ", slots, ")"));
    }
    if (cache.scales == nullptr) {
      std::memcpy(cache.data + slot * row, rows.data + t * row, row * sizeof(float));
      continue;
    }
    // fp8e4m3: each KV head's row gets its own scale, stored at the same slot of the scale
    // array, so whatever moves the page (prefix sharing, copy-on-write) moves its scales too.
    for (int64_t h = 0; h < heads; ++h) {
      cache.scales[slot * heads + h] =
          quantize_row_fp8e4m3(rows.data + t * row + h * d, d, cache.data + slot * row + h * d);
    }
  }
  return absl::OkStatus();
}

void paged_qk(const FView& q, const KvCacheView& cache, const PagedBatch& batch, int64_t kv_dim,
              float* out, ThreadPool* pool) {
  const int64_t tokens = q.shape[0], hq = q.shape[1], d = q.shape[2], hkv = cache.shape[2];
  const int64_t group = hq / hkv;
  auto work = [&](int64_t begin, int64_t end) {
    for (int64_t th = begin; th < end; ++th) {
      const int64_t t = th / hq, h = th % hq, s = batch.seq_of_token[t];
      float* o = out + th * kv_dim;
      const float* qv = q.data + th * d;
      const int64_t len = batch.kv_len[s];
      for (int64_t j = 0; j < len; ++j) {
        const int64_t r = batch.row(s, j) * hkv + h / group;
        // An fp8e4m3 row is codes * scale: the scale factors out of the dot product.
        o[j] = dot(qv, cache.data + r * d, d) * (cache.scales ? cache.scales[r] : 1.0f);
      }
      std::fill(o + len, o + kv_dim, kNegInf);
    }
  };
  pool ? pool->parallel_for(tokens * hq, work) : work(0, tokens * hq);
}

absl::Status check_positions(const IView& positions) {
  for (int64_t t = 0; t < positions.numel(); ++t) {
    if (positions.data[t] < 0) {
      return absl::OutOfRangeError(
          absl::StrCat("positions[", t, "] = ", positions.data[t], " is negative"));
    }
  }
  return absl::OkStatus();
}

absl::Status causal_mask(const FView& scores, const IView& positions, float* out) {
  if (absl::Status s = check_positions(positions); !s.ok()) return s;
  const int64_t tokens = scores.shape[0], heads = scores.shape[1], k = scores.shape[2];
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t visible = std::clamp<int64_t>(static_cast<int64_t>(positions.data[t]) + 1, 0, k);
    for (int64_t h = 0; h < heads; ++h) {
      const float* in = scores.data + (t * heads + h) * k;
      float* o = out + (t * heads + h) * k;
      std::copy(in, in + visible, o);
      std::fill(o + visible, o + k, kNegInf);
    }
  }
  return absl::OkStatus();
}

void paged_pv(const FView& p, const KvCacheView& cache, const PagedBatch& batch, float* out,
              ThreadPool* pool) {
  const int64_t tokens = p.shape[0], hq = p.shape[1], k = p.shape[2];
  const int64_t hkv = cache.shape[2], d = cache.shape[3], group = hq / hkv;
  auto work = [&](int64_t begin, int64_t end) {
    for (int64_t th = begin; th < end; ++th) {
      const int64_t t = th / hq, h = th % hq, s = batch.seq_of_token[t];
      float* o = out + th * d;
      std::fill(o, o + d, 0.0f);
      const float* pr = p.data + th * k;
      const int64_t len = std::min(batch.kv_len[s], k);
      for (int64_t j = 0; j < len; ++j) {
        const int64_t r = batch.row(s, j) * hkv + h / group;
        const float w = pr[j] * (cache.scales ? cache.scales[r] : 1.0f);  // codes * scale
        const float* v = cache.data + r * d;
        for (int64_t i = 0; i < d; ++i) o[i] += w * v[i];
      }
    }
  };
  pool ? pool->parallel_for(tokens * hq, work) : work(0, tokens * hq);
}

absl::Status flash_attention(const FView& q, const FView& k, const FView& v,
                             const KvCacheView& k_cache, const KvCacheView& v_cache,
                             const IView& positions, const IView& slot_mapping,
                             const PagedBatch& batch, double scale, float* out, ThreadPool* pool) {
  if (absl::Status s = check_positions(positions); !s.ok()) return s;
  if (absl::Status s = kv_write(k_cache, k, slot_mapping); !s.ok()) return s;
  if (absl::Status s = kv_write(v_cache, v, slot_mapping); !s.ok()) return s;
  const int64_t tokens = q.shape[0], hq = q.shape[1], d = q.shape[2];
  const int64_t hkv = k_cache.shape[2], group = hq / hkv;
  const float sc = static_cast<float>(scale);
  constexpr int64_t kKeyBlock = 64;
  auto work = [&](int64_t begin, int64_t end) {
    std::vector<float> acc(d), scores(kKeyBlock);
    std::vector<int64_t> rows(kKeyBlock);
    // fp8e4m3 caches: a row's value is codes * scale; the K scale multiplies its score, the V
    // scale its probability's weight (not the normalizer).
    auto k_scale = [&](int64_t r) { return k_cache.scales ? k_cache.scales[r / d] : 1.0f; };
    auto v_scale = [&](int64_t r) { return v_cache.scales ? v_cache.scales[r / d] : 1.0f; };
    for (int64_t th = begin; th < end; ++th) {
      const int64_t t = th / hq, h = th % hq, s = batch.seq_of_token[t];
      const float* qv = q.data + th * d;
      // Keys visible to token t: j < kv_len and j <= position (causal).
      const int64_t len =
          std::min<int64_t>(batch.kv_len[s], static_cast<int64_t>(positions.data[t]) + 1);
      // Online softmax (Milakov & Gimelshein; FlashAttention) over blocks of keys: the scores of
      // a block first, then one rescale of the running max m, normalizer l and accumulator per
      // block (not per key), and the block's exponentials in one vectorizable loop.
      float m = kNegInf, l = 0;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j0 = 0; j0 < len; j0 += kKeyBlock) {
        const int64_t n = std::min(kKeyBlock, len - j0);
        float m_block = kNegInf;
        for (int64_t j = 0; j < n; ++j) {
          rows[j] = (batch.row(s, j0 + j) * hkv + h / group) * d;
          scores[j] = sc * dot(qv, k_cache.data + rows[j], d) * k_scale(rows[j]);
          m_block = std::max(m_block, scores[j]);
        }
        const float m_new = std::max(m, m_block);
        const float correction = std::exp(m - m_new);  // exp(-inf) = 0 on the first block
        float block_sum = 0;
        for (int64_t j = 0; j < n; ++j) {
          scores[j] = fast_expf(scores[j] - m_new);
          block_sum += scores[j];
        }
        l = l * correction + block_sum;
        for (int64_t i = 0; i < d; ++i) acc[i] *= correction;
        for (int64_t j = 0; j < n; ++j) {
          const float p = scores[j] * v_scale(rows[j]);
          const float* vv = v_cache.data + rows[j];
          for (int64_t i = 0; i < d; ++i) acc[i] += p * vv[i];
        }
        m = m_new;
      }
      float* o = out + th * d;
      const float inv = l > 0 ? 1.0f / l : 0.0f;  // no visible key: defined as 0, not NaN
      for (int64_t i = 0; i < d; ++i) o[i] = acc[i] * inv;
    }
  };
  pool ? pool->parallel_for(tokens * hq, work) : work(0, tokens * hq);
  return absl::OkStatus();
}

}  // namespace kiln
