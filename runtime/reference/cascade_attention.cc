// Cascade decode attention on the CPU (see cascade_attention.h).
#include "runtime/reference/cascade_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kiln {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

/// One softmax over a KV range: running max m, sum l and unnormalized output o.
struct Partial {
  float m = kNegInf;
  float l = 0;
  std::vector<float> o;
};

}  // namespace

absl::Status cascade_attention(const FView& q, const KvCacheView& k_cache,
                               const KvCacheView& v_cache, const PagedBatch& batch,
                               const CascadeLayout& layout, double scale, float* out) {
  const int64_t S = batch.num_seqs, hq = q.shape[1], d = q.shape[2];
  const int64_t hkv = k_cache.shape[2], group = hq / hkv, ps = batch.page_size;
  if (q.shape[0] != S) {
    return absl::InvalidArgumentError(
        absl::StrCat("cascade attention is for decode steps: ", q.shape[0], " query tokens for ", S,
                     " sequences"));
  }
  if (static_cast<int64_t>(layout.kv_start.size()) != S ||
      static_cast<int64_t>(layout.prefix_pages.size()) != (layout.prefix_len + ps - 1) / ps) {
    return absl::InvalidArgumentError("cascade attention: the layout does not fit the batch");
  }
  for (int64_t s = 0; s < S; ++s) {
    if (layout.kv_start[s] < 0 || layout.kv_start[s] > batch.kv_len[s]) {
      return absl::InvalidArgumentError(absl::StrCat("cascade attention: kv_start[", s,
                                                     "] = ", layout.kv_start[s], " outside [0, ",
                                                     batch.kv_len[s], "]"));
    }
  }
  const float sc = static_cast<float>(scale);
  // Softmax over cache rows rows(j), j in [begin, end), of KV head kh for query qv.
  auto attend = [&](const float* qv, int64_t kh, int64_t begin, int64_t end, auto row) {
    Partial p;
    p.o.assign(d, 0.0f);
    for (int64_t j = begin; j < end; ++j) {
      const int64_t r = row(j) * hkv + kh;
      float sdot = 0;
      for (int64_t i = 0; i < d; ++i) sdot += qv[i] * k_cache.data[r * d + i];
      const float x = sc * sdot * (k_cache.scales ? k_cache.scales[r] : 1.0f);
      const float m_new = std::max(p.m, x);
      const float corr = std::exp(p.m - m_new);
      const float w = std::exp(x - m_new);
      p.l = p.l * corr + w;
      const float wv = w * (v_cache.scales ? v_cache.scales[r] : 1.0f);
      for (int64_t i = 0; i < d; ++i) p.o[i] = p.o[i] * corr + wv * v_cache.data[r * d + i];
      p.m = m_new;
    }
    return p;
  };
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t h = 0; h < hq; ++h) {
      const float* qv = q.data + (s * hq + h) * d;
      std::vector<Partial> parts;
      if (layout.kv_start[s] > 0) {  // a member: the prefix through the shared pages
        parts.push_back(attend(qv, h / group, 0, layout.prefix_len, [&](int64_t j) {
          return static_cast<int64_t>(layout.prefix_pages[j / ps]) * ps + j % ps;
        }));
      }
      parts.push_back(attend(qv, h / group, layout.kv_start[s], batch.kv_len[s],
                             [&](int64_t j) { return batch.row(s, j); }));
      // The log-sum-exp merge: weights exp(m_i - max m), an empty part weighing 0.
      float m = kNegInf;
      for (const Partial& p : parts) m = std::max(m, p.m);
      float l = 0;
      std::vector<float> o(d, 0.0f);
      for (const Partial& p : parts) {
        if (p.l == 0) continue;
        const float w = std::exp(p.m - m);
        l += w * p.l;
        for (int64_t i = 0; i < d; ++i) o[i] += w * p.o[i];
      }
      float* dst = out + (s * hq + h) * d;
      for (int64_t i = 0; i < d; ++i) dst[i] = l > 0 ? o[i] / l : 0.0f;
    }
  }
  return absl::OkStatus();
}

}  // namespace kiln
