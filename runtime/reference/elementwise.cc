// Elementwise ops, reductions over the last axis, fused_elementwise and RMSNorm on the CPU.
#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/reference/ops.h"

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

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

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
    case OpKind::kNeg:
      for (int64_t i = 0; i < n; ++i) out[i] = -x[i];
      return;
    case OpKind::kExp:
      for (int64_t i = 0; i < n; ++i) out[i] = std::exp(x[i]);
      return;
    case OpKind::kRsqrt:
      for (int64_t i = 0; i < n; ++i) out[i] = 1.0f / std::sqrt(x[i]);
      return;
    default:
      for (int64_t i = 0; i < n; ++i) out[i] = silu(x[i]);
      return;
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
                       const std::vector<int64_t>& out_shape, float* out) {
  std::vector<std::vector<int64_t>> strides;
  for (const FView& x : xs) strides.push_back(broadcast_strides(x.shape, out_shape));
  std::vector<float> args(xs.size()), scratch(expr.nodes().size());
  for_each_row(out_shape, strides, [&](int64_t o, const int64_t* in, int64_t len) {
    for (int64_t j = 0; j < len; ++j) {
      for (size_t i = 0; i < xs.size(); ++i) {
        args[i] = xs[i].data[in[i] + j * (out_shape.empty() ? 0 : strides[i].back())];
      }
      out[o + j] = expr.eval(args.data(), scratch.data());
    }
  });
}

void rmsnorm(const FView& x, const float* residual, const float* w, double eps, float* out,
             float* sum_out) {
  const int64_t h = x.shape.back();
  const int64_t rows = h == 0 ? 0 : x.numel() / h;
  for (int64_t r = 0; r < rows; ++r) {
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
}

}  // namespace kiln
