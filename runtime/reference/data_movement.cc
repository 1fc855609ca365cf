// Data movement (gather, slice, concat, last_token_rows) and rotary embeddings (rope_table, fused
// rope) on the CPU. Float data and int32 indices are both 4 bytes, so movement copies raw words.
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "ir/rope.h"
#include "runtime/reference/matmul.h"
#include "runtime/reference/ops.h"
#include "runtime/reference/thread_pool.h"

namespace kiln {

absl::Status gather_rows(const void* table, DType table_dtype, int64_t rows, int64_t row_elems,
                         const IView& idx, void* out) {
  const bool narrow = table_dtype != DType::kF32;  // bf16, f16 or GGUF blocks: widen each row
  for (int64_t t = 0; t < idx.numel(); ++t) {
    const int64_t r = idx.data[t];
    if (r < 0 || r >= rows) {
      return absl::OutOfRangeError(
          absl::StrCat("index [", t, "] = ", r, " is out of range [0, ", rows, ")"));
    }
    if (narrow) {
      widen_to_f32(table_dtype, table, r * row_elems, row_elems,
                   static_cast<float*>(out) + t * row_elems);
    } else {
      std::memcpy(static_cast<char*>(out) + t * row_elems * 4,
                  static_cast<const char*>(table) + r * row_elems * 4, row_elems * 4);
    }
  }
  return absl::OkStatus();
}

void slice(const void* x, const std::vector<int64_t>& shape, int axis, int64_t start, int64_t end,
           void* out) {
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; ++d) outer *= shape[d];
  for (size_t d = axis + 1; d < shape.size(); ++d) inner *= shape[d];
  const int64_t len = shape[axis];
  const char* src = static_cast<const char*>(x);
  char* dst = static_cast<char*>(out);
  const int64_t run = (end - start) * inner * 4;
  for (int64_t o = 0; o < outer; ++o) {
    std::memcpy(dst + o * run, src + (o * len + start) * inner * 4, run);
  }
}

void concat(const std::vector<const void*>& xs, const std::vector<std::vector<int64_t>>& shapes,
            int axis, void* out) {
  int64_t outer = 1, inner = 1, total = 0;
  for (int d = 0; d < axis; ++d) outer *= shapes[0][d];
  for (size_t d = axis + 1; d < shapes[0].size(); ++d) inner *= shapes[0][d];
  for (const auto& s : shapes) total += s[axis];
  char* dst = static_cast<char*>(out);
  for (int64_t o = 0; o < outer; ++o) {
    int64_t at = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      const int64_t run = shapes[i][axis] * inner * 4;
      std::memcpy(dst + (o * total + at) * inner * 4, static_cast<const char*>(xs[i]) + o * run,
                  run);
      at += shapes[i][axis];
    }
  }
}

absl::Status last_token_rows(const FView& x, const IView& qo_indptr, float* out) {
  const int64_t tokens = x.shape[0], h = x.shape[1];
  for (int64_t s = 0; s + 1 < qo_indptr.numel(); ++s) {
    const int64_t begin = qo_indptr.data[s], end = qo_indptr.data[s + 1];
    if (begin < 0 || end <= begin || end > tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("qo_indptr[", s, "..", s + 1, "] = [", begin, ", ", end,
                       ") is not a non-empty token range within [0, ", tokens, ")"));
    }
    std::memcpy(out + s * h, x.data + (end - 1) * h, h * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status rope_table(const Attributes& attrs, float* out) {
  absl::StatusOr<std::vector<double>> inv = rope_inv_freq(attrs);
  if (!inv.ok()) return inv.status();
  const bool is_cos = attrs.string_or("part", "cos") == "cos";
  const bool half = attrs.string_or("layout", "half") == "half";
  const int64_t rd = static_cast<int64_t>(inv->size()) * 2;
  const int64_t max_pos = attrs.int_or("max_positions", 0);
  for (int64_t p = 0; p < max_pos; ++p) {
    for (int64_t i = 0; i < rd; ++i) {
      const double angle = static_cast<double>(p) * (*inv)[half ? i % (rd / 2) : i / 2];
      out[p * rd + i] = static_cast<float>(is_cos ? std::cos(angle) : std::sin(angle));
    }
  }
  return absl::OkStatus();
}

absl::Status rope(const FView& x, const IView& positions, const Attributes& attrs, float* out,
                  ThreadPool* pool) {
  absl::StatusOr<std::vector<double>> inv = rope_inv_freq(attrs);
  if (!inv.ok()) return inv.status();
  const bool half = attrs.string_or("layout", "half") == "half";
  const int64_t tokens = x.shape[0], heads = x.shape[1], d = x.shape[2];
  const int64_t pairs = static_cast<int64_t>(inv->size());
  for (int64_t t = 0; t < tokens; ++t) {
    if (positions.data[t] < 0) {
      return absl::OutOfRangeError(
          absl::StrCat("positions[", t, "] = ", positions.data[t], " is negative"));
    }
  }
  std::memcpy(out, x.data, x.numel() * sizeof(float));  // dims past rotary_dim pass through
  auto run_tokens = [&](int64_t token_begin, int64_t token_end) {
    std::vector<float> cos_t(pairs), sin_t(pairs);
    for (int64_t t = token_begin; t < token_end; ++t) {
      const int64_t pos = positions.data[t];
      for (int64_t i = 0; i < pairs; ++i) {
        const double angle = static_cast<double>(pos) * (*inv)[i];
        cos_t[i] = static_cast<float>(std::cos(angle));
        sin_t[i] = static_cast<float>(std::sin(angle));
      }
      for (int64_t h = 0; h < heads; ++h) {
        const float* xi = x.data + (t * heads + h) * d;
        float* o = out + (t * heads + h) * d;
        for (int64_t i = 0; i < pairs; ++i) {
          const int64_t a = half ? i : 2 * i;
          const int64_t b = half ? i + pairs : 2 * i + 1;
          o[a] = xi[a] * cos_t[i] - xi[b] * sin_t[i];
          o[b] = xi[b] * cos_t[i] + xi[a] * sin_t[i];
        }
      }
    }
  };
  // The angles (two double-precision trig calls per rotated pair and token) dominate: prefill
  // splits the tokens over the pool; a decode step's few tokens make one chunk, which
  // parallel_for runs on this thread.
  constexpr int64_t kMinTokensPerTask = 8;
  pool ? pool->parallel_for(tokens, run_tokens, kMinTokensPerTask) : run_tokens(0, tokens);
  return absl::OkStatus();
}

}  // namespace kiln
