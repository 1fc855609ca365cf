// Elementwise ops, reductions over the last axis, fused_elementwise and RMSNorm on the CPU.
#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/reference/fast_exp.h"
#include "runtime/reference/ops.h"
#include "runtime/reference/thread_pool.h"

namespace kiln {
namespace {

// Strides of `in` (row-major) as seen from `out` under numpy broadcasting: 0 on broadcast dims.
std::vector<int64_t> broadcast_strides(const std::vector<int64_t>& in,
                                       const std::vector<int64_t>& out) {
  std::vector<int64_t> strides(out.size(), 0);
  int64_t stride = 1;
  for (size_t i = 0; i < in.size(); ++i) {
    const size_t d_in = in.size() - 1 - i;
    const size_t d_out = out.size() - 1 - i;
    strides[d_out] = in[d_in] == 1 ? 0 : stride;
    stride *= in[d_in];
  }
  return strides;
}

// Calls row(out_offset, in_offsets, len) for each run along the last output dim; input i moves
// by strides[i].back() along the run.
template <typename F>
void for_each_row(const std::vector<int64_t>& out_shape,
                  const std::vector<std::vector<int64_t>>& strides, F&& row) {
  const size_t rank = out_shape.size();
  const int64_t total = num_elements(out_shape);
  if (total == 0) return;
  const int64_t len = rank == 0 ? 1 : out_shape.back();
  std::vector<int64_t> counter(rank, 0);
  std::vector<int64_t> offsets(strides.size(), 0);
  for (int64_t out_offset = 0; out_offset < total; out_offset += len) {
    row(out_offset, offsets.data(), len);
    // Advance the odometer over all but the last dim.
    for (int d = static_cast<int>(rank) - 2; d >= 0; --d) {
      ++counter[d];
      for (size_t i = 0; i < strides.size(); ++i) offsets[i] += strides[i][d];
      if (counter[d] < out_shape[d]) break;
      for (size_t i = 0; i < strides.size(); ++i) offsets[i] -= strides[i][d] * out_shape[d];
      counter[d] = 0;
    }
  }
}

template <typename Op>
void binary_loop(const FView& a, const FView& b, const std::vector<int64_t>& out_shape, float* out,
                 Op op) {
  if (a.shape == out_shape && b.shape == out_shape) {
    for (int64_t i = 0, n = num_elements(out_shape); i < n; ++i) out[i] = op(a.data[i], b.data[i]);
    return;
  }
  std::vector<std::vector<int64_t>> strides = {broadcast_strides(a.shape, out_shape),
                                               broadcast_strides(b.shape, out_shape)};
  const int64_t sa = out_shape.empty() ? 0 : strides[0].back();
  const int64_t sb = out_shape.empty() ? 0 : strides[1].back();
  for_each_row(out_shape, strides, [&](int64_t o, const int64_t* in, int64_t len) {
    const float* pa = a.data + in[0];
    const float* pb = b.data + in[1];
    for (int64_t j = 0; j < len; ++j) out[o + j] = op(pa[j * sa], pb[j * sb]);
  });
}

// Rows of prefill-sized ops are split over the pool in tasks of at least this many values: less
// work than that costs more in the hand-off than a second thread saves.
constexpr int64_t kMinElementsPerTask = 16384;

// One expression call over n values. On x86-64 the compiler also builds an AVX2 + FMA version and
// the loader picks it where the CPU has them (function multi-versioning): the rest of the library
// stays baseline x86-64, and SiLU over 8 lanes with FMA is ~3x the SSE2 loop.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KILN_SIMD_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define KILN_SIMD_CLONES
#endif
KILN_SIMD_CLONES void expr_call_block(Expr::Kind kind, const float* a, const float* b, float* r,
                                      int64_t n) {
  switch (kind) {
    case Expr::Kind::kAdd: for (int64_t t = 0; t < n; ++t) r[t] = a[t] + b[t]; return;
    case Expr::Kind::kSub: for (int64_t t = 0; t < n; ++t) r[t] = a[t] - b[t]; return;
    case Expr::Kind::kMul: for (int64_t t = 0; t < n; ++t) r[t] = a[t] * b[t]; return;
    case Expr::Kind::kDiv: for (int64_t t = 0; t < n; ++t) r[t] = a[t] / b[t]; return;
    case Expr::Kind::kNeg: for (int64_t t = 0; t < n; ++t) r[t] = -a[t]; return;
    case Expr::Kind::kExp: for (int64_t t = 0; t < n; ++t) r[t] = fast_expf(a[t]); return;
    case Expr::Kind::kRsqrt: for (int64_t t = 0; t < n; ++t) r[t] = 1.0f / std::sqrt(a[t]); return;
    case Expr::Kind::kSilu: for (int64_t t = 0; t < n; ++t) r[t] = fast_siluf(a[t]); return;
    case Expr::Kind::kInput:
    case Expr::Kind::kLiteral: return;  // leaves, handled by the caller
  }
}

}  // namespace

void binary_op(OpKind op, const FView& a, const FView& b, const std::vector<int64_t>& out_shape,
               float* out) {
  switch (op) {
    case OpKind::kAdd:
      return binary_loop(a, b, out_shape, out, [](float x, float y) { return x + y; });
    case OpKind::kSub:
      return binary_loop(a, b, out_shape, out, [](float x, float y) { return x - y; });
    case OpKind::kMul:
      return binary_loop(a, b, out_shape, out, [](float x, float y) { return x * y; });
    default: return binary_loop(a, b, out_shape, out, [](float x, float y) { return x / y; });
  }
}

void unary_op(OpKind op, const float* x, int64_t n, float* out) {
  switch (op) {
    case OpKind::kNeg: return expr_call_block(Expr::Kind::kNeg, x, nullptr, out, n);
    case OpKind::kExp: return expr_call_block(Expr::Kind::kExp, x, nullptr, out, n);
    case OpKind::kRsqrt: return expr_call_block(Expr::Kind::kRsqrt, x, nullptr, out, n);
    default: return expr_call_block(Expr::Kind::kSilu, x, nullptr, out, n);
  }
}

void reduce_last(OpKind op, const FView& x, float* out) {
  const int64_t len = x.shape.back();
  const int64_t rows = len == 0 ? 0 : x.numel() / len;
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = x.data + r * len;
    if (op == OpKind::kReduceMax) {
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < len; ++j) m = std::max(m, p[j]);
      out[r] = m;
    } else {
      double s = 0;  // double: long rows (vocab, K) would lose digits in fp32
      for (int64_t j = 0; j < len; ++j) s += p[j];
      out[r] = static_cast<float>(op == OpKind::kReduceMean ? s / static_cast<double>(len) : s);
    }
  }
}

void fused_elementwise(const Expr& expr, const std::vector<FView>& xs,
                       const std::vector<int64_t>& out_shape, float* out, ThreadPool* pool) {
  const int64_t total = num_elements(out_shape);
  if (total == 0) return;
  const size_t rank = out_shape.size();
  const int64_t len = rank == 0 ? 1 : out_shape.back();
  const int64_t rows = total / len;
  std::vector<std::vector<int64_t>> strides;
  for (const FView& x : xs) strides.push_back(broadcast_strides(x.shape, out_shape));
  const std::vector<Expr::Node>& nodes = expr.nodes();
  // Node by node over blocks of a row (not element by element through Expr::eval): each node is
  // one tight loop the compiler vectorizes, and the interpreter's dispatch is paid per block.
  constexpr int64_t kBlock = 256;
  auto run_rows = [&](int64_t row_begin, int64_t row_end) {
    std::vector<float> buf(nodes.size() * kBlock);
    std::vector<int64_t> in(xs.size());
    for (int64_t row = row_begin; row < row_end; ++row) {
      // The inputs' offsets of this row: unravel the row index over the leading dims.
      std::fill(in.begin(), in.end(), 0);
      for (int64_t d = static_cast<int64_t>(rank) - 2, rem = row; d >= 0; --d) {
        const int64_t coord = rem % out_shape[d];
        rem /= out_shape[d];
        for (size_t i = 0; i < xs.size(); ++i) in[i] += coord * strides[i][d];
      }
      for (int64_t j0 = 0; j0 < len; j0 += kBlock) {
        const int64_t n = std::min(kBlock, len - j0);
        for (size_t i = 0; i < nodes.size(); ++i) {
          const Expr::Node& e = nodes[i];
          float* r = buf.data() + i * kBlock;
          const float* a = e.args[0] >= 0 ? buf.data() + e.args[0] * kBlock : nullptr;
          const float* b = e.args[1] >= 0 ? buf.data() + e.args[1] * kBlock : nullptr;
          switch (e.kind) {
            case Expr::Kind::kInput: {
              const int64_t step = rank == 0 ? 0 : strides[e.input].back();
              const float* src = xs[e.input].data + in[e.input] + j0 * step;
              if (step == 1) {
                std::copy(src, src + n, r);
              } else {
                for (int64_t t = 0; t < n; ++t) r[t] = src[t * step];
              }
              break;
            }
            case Expr::Kind::kLiteral: std::fill(r, r + n, static_cast<float>(e.literal)); break;
            default: expr_call_block(e.kind, a, b, r, n); break;
          }
        }
        const float* root = buf.data() + (nodes.size() - 1) * kBlock;
        std::copy(root, root + n, out + row * len + j0);
      }
    }
  };
  // Prefill-sized ops are split over rows of >= kMinElementsPerTask values; smaller ones (a decode
  // step's single row) make one chunk, which parallel_for runs on this thread.
  pool ? pool->parallel_for(rows, run_rows, std::max<int64_t>(1, kMinElementsPerTask / len))
       : run_rows(0, rows);
}

void rmsnorm(const FView& x, const float* residual, const float* w, double eps, float* out,
             float* sum_out, ThreadPool* pool) {
  const int64_t h = x.shape.back();
  const int64_t rows = h == 0 ? 0 : x.numel() / h;
  auto run_rows = [&](int64_t row_begin, int64_t row_end) {
    for (int64_t r = row_begin; r < row_end; ++r) {
      const float* xr = x.data + r * h;
      const float* in = xr;
      if (residual != nullptr) {
        float* s = sum_out + r * h;
        for (int64_t j = 0; j < h; ++j) s[j] = xr[j] + residual[r * h + j];
        in = s;
      }
      double ss = 0;
      for (int64_t j = 0; j < h; ++j) ss += static_cast<double>(in[j]) * in[j];
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(h) + eps));
      for (int64_t j = 0; j < h; ++j) out[r * h + j] = in[j] * inv * w[j];
    }
  };
  const int64_t min_rows = std::max<int64_t>(1, kMinElementsPerTask / std::max<int64_t>(1, h));
  pool ? pool->parallel_for(rows, run_rows, min_rows) : run_rows(0, rows);
}

}  // namespace kiln
