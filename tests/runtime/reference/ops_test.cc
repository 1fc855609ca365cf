// Reference ops against naive loops written here, and every fused op against its primitive
// composition (small sizes, symbolic dims, broadcasting, fresh random inputs).
#include <cmath>
#include <cstring>
#include <numbers>

#include "gtest/gtest.h"
#include "ir/rope.h"
#include "runtime/reference/fast_exp.h"
#include "runtime/reference/ops.h"
#include "runtime/reference/thread_pool.h"
#include "tests/runtime/reference/test_util.h"

namespace kiln {
namespace {

using namespace kiln::testing;  // NOLINT: test helpers

TEST(ReferenceOpsTest, ElementwiseBroadcastAndReductions) {
  Graph g;
  GraphBuilder b(g);
  b.symbol("T", 16);
  Value* x = b.input("x", f32({sym("T"), c(4), c(6)}));
  Value* row = b.input("row", f32({c(6)}));
  Value* col = b.input("col", f32({sym("T"), c(4), c(1)}));
  Value* a = b.add(x, row);  // [T,4,6] + [6]
  Value* s = b.sub(a, col);  // [T,4,6] - [T,4,1]
  Value* m = b.mul(s, x);
  Value* d = b.div(m, b.exp(col));
  Value* u = b.silu(b.neg(d));
  Value* r = b.rsqrt(b.exp(u));
  b.output("r", r);
  b.output("sum", b.reduce_sum(x));
  b.output("mean", b.reduce_mean(x));
  b.output("max", b.reduce_max(x));
  b.output("scalar", b.mul(x, b.constant(0.5, DType::kF32)));
  ASSERT_TRUE(b.status().ok()) << b.status();
  const int64_t T = 3;
  InputBindings in;
  in.tensors["x"] = random_tensor({T, 4, 6}, 1);
  in.tensors["row"] = random_tensor({6}, 2);
  in.tensors["col"] = random_tensor({T, 4, 1}, 3);
  std::vector<HostTensor> out = run_graph(g, in);
  ASSERT_EQ(out.size(), 5u);
  const auto& X = in.tensors["x"].f;
  const auto& R = in.tensors["row"].f;
  const auto& C = in.tensors["col"].f;
  std::vector<float> want_r, want_sum, want_mean, want_max, want_scalar;
  for (int64_t t = 0; t < T; ++t) {
    for (int h = 0; h < 4; ++h) {
      const float cv = C[t * 4 + h];
      double sum = 0;
      float mx = -INFINITY;
      for (int j = 0; j < 6; ++j) {
        const float xv = X[(t * 4 + h) * 6 + j];
        const float dv = (xv + R[j] - cv) * xv / std::exp(cv);
        const float uv = -dv / (1 + std::exp(dv));
        want_r.push_back(1 / std::sqrt(std::exp(uv)));
        want_scalar.push_back(xv * 0.5f);
        sum += xv;
        mx = std::max(mx, xv);
      }
      want_sum.push_back(sum);
      want_mean.push_back(sum / 6);
      want_max.push_back(mx);
    }
  }
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{T, 4, 6}));
  EXPECT_LE(max_rel_err(out[0].f, want_r), 1e-6);
  EXPECT_EQ(out[1].shape, (std::vector<int64_t>{T, 4, 1}));
  EXPECT_LE(max_rel_err(out[1].f, want_sum), 1e-6);
  EXPECT_LE(max_rel_err(out[2].f, want_mean), 1e-6);
  EXPECT_EQ(out[3].f, want_max);
  EXPECT_EQ(out[4].f, want_scalar);
}

TEST(ReferenceOpsTest, DataMovement) {
  Graph g;
  GraphBuilder b(g);
  b.symbol("T", 16);
  b.symbol("S", 4);
  Value* table = b.param("table", Type{DType::kBF16, {c(10), c(2), c(3)}});
  Value* idx = b.input("idx", i32({sym("T")}));
  Value* qo = b.input("qo_indptr", i32({sym("S", 1)}));
  Value* e = b.gather(table, idx);     // bf16[T,2,3]
  Value* flat = b.reshape(e, {0, 6});  // [T,6]
  Value* lo = b.slice(flat, 1, 0, 2);
  Value* hi = b.slice(flat, -1, 2, 6);
  Value* cat = b.concat({hi, lo}, 1);  // [T,6] rotated by 2
  b.output("cat", cat);
  b.output("last", b.last_token_rows(cat, qo));
  b.output("as_int",
           b.cast(b.mul(b.cast(cat, DType::kF32), b.constant(10, DType::kF32)), DType::kI32));
  ASSERT_TRUE(b.status().ok()) << b.status();
  std::vector<float> tf = random_floats(60, 4);
  std::vector<uint16_t> tb(60);
  for (int i = 0; i < 60; ++i) tb[i] = to_bf16(tf[i]);
  InputBindings in;
  in.tensors["idx"] = HostTensor::ints({4}, {7, 0, 9, 7});
  in.tensors["qo_indptr"] = HostTensor::ints({3}, {0, 3, 4});
  std::vector<HostTensor> out =
      run_graph(g, in, {{"table", ParamView{DType::kBF16, {10, 2, 3}, tb.data()}}});
  ASSERT_EQ(out.size(), 3u);
  std::vector<float> want;
  for (int r : {7, 0, 9, 7}) {
    for (int j = 0; j < 6; ++j) want.push_back(from_bf16(tb[r * 6 + (j + 2) % 6]));
  }
  EXPECT_EQ(out[0].f, want);
  EXPECT_EQ(out[0].dtype, DType::kBF16);
  EXPECT_EQ(out[1].shape, (std::vector<int64_t>{2, 6}));
  EXPECT_EQ(out[1].f, std::vector<float>(want.begin() + 12, want.begin() + 24));
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(out[2].i[i], static_cast<int32_t>(want[i] * 10.0f));
  }
}

// --- fused ops vs their primitive compositions

TEST(ReferenceOpsTest, RmsNormAndResidualMatchPrimitives) {
  for (bool residual : {false, true}) {
    Graph g;
    GraphBuilder b(g);
    b.symbol("T", 16);
    Value* x = b.input("x", f32({sym("T"), c(24)}));
    Value* r = b.input("r", f32({sym("T"), c(24)}));
    Value* w = b.param("w", Type{DType::kBF16, {c(24)}});
    Attributes eps;
    eps.set("eps", 1e-5);
    // Primitive: h = x (+ r); h * rsqrt(mean(h*h) + eps) * w
    Value* h = residual ? b.add(x, r) : x;
    Value* prim =
        b.mul(b.mul(h, b.rsqrt(b.add(b.reduce_mean(b.mul(h, h)), b.constant(1e-5, DType::kF32)))),
              b.cast(w, DType::kF32));
    std::vector<Value*> fused =
        residual ? b.op(OpKind::kRmsNormResidual, {x, r, b.cast(w, DType::kF32)}, eps)
                 : b.op(OpKind::kRmsNorm, {x, b.cast(w, DType::kF32)}, eps);
    ASSERT_TRUE(b.status().ok()) << b.status();
    b.output("prim", prim);
    b.output("fused", fused[0]);
    if (residual) {
      b.output("sum_prim", h);
      b.output("sum_fused", fused[1]);
    }
    std::vector<uint16_t> wb(24);
    for (int i = 0; i < 24; ++i) wb[i] = to_bf16(random_floats(24, 9)[i]);
    InputBindings in;
    in.tensors["x"] = random_tensor({5, 24}, 7, -3, 3);
    in.tensors["r"] = random_tensor({5, 24}, 8);
    std::vector<HostTensor> out =
        run_graph(g, in, {{"w", ParamView{DType::kBF16, {24}, wb.data()}}});
    ASSERT_EQ(out.size(), residual ? 4u : 2u);
    EXPECT_LE(max_rel_err(out[1].f, out[0].f), 1e-6) << residual;
    if (residual) {
      EXPECT_EQ(out[3].f, out[2].f);
    }
  }
}

TEST(ReferenceOpsTest, RopeTableMatchesFormula) {
  Attributes a;
  a.set("part", std::string("sin"));
  a.set("theta", 500000.0);
  a.set("rotary_dim", int64_t{8});
  a.set("max_positions", int64_t{40});
  a.set("layout", std::string("interleaved"));
  a.set("scaling", std::string("llama3"));
  a.set("scaling_factor", 8.0);
  a.set("scaling_low_freq_factor", 1.0);
  a.set("scaling_high_freq_factor", 4.0);
  a.set("scaling_original_max_positions", int64_t{16});
  Graph g;
  GraphBuilder b(g);
  b.output("sin", b.op1(OpKind::kRopeTable, {}, a));
  ASSERT_TRUE(b.status().ok()) << b.status();
  std::vector<HostTensor> out = run_graph(g, {});
  ASSERT_EQ(out.size(), 1u);
  // HF llama3: wavelen = 2π/f; < orig/high: f; > orig/low: f/factor; else smooth blend.
  for (int p = 0; p < 40; ++p) {
    for (int i = 0; i < 8; ++i) {
      double f = std::pow(500000.0, -2.0 * (i / 2) / 8);
      const double wavelen = 2 * std::numbers::pi / f;
      if (wavelen > 16.0 / 1.0) {
        f /= 8;
      } else if (wavelen >= 16.0 / 4.0) {
        const double smooth = (16.0 / wavelen - 1) / (4 - 1);
        f = (1 - smooth) * f / 8 + smooth * f;
      }
      ASSERT_NEAR(out[0].f[p * 8 + i], std::sin(p * f), 1e-6) << p << " " << i;
    }
  }
}

Attributes rope_attrs(const std::string& layout, int64_t rd, bool llama3) {
  Attributes a;
  a.set("theta", 10000.0);
  a.set("rotary_dim", rd);
  a.set("layout", layout);
  if (llama3) {
    a.set("scaling", std::string("llama3"));
    a.set("scaling_factor", 8.0);
    a.set("scaling_low_freq_factor", 1.0);
    a.set("scaling_high_freq_factor", 4.0);
    a.set("scaling_original_max_positions", int64_t{32});
  }
  return a;
}

TEST(ReferenceOpsTest, RopeMatchesPrimitiveComposition) {
  const int64_t H = 3, D = 16, T = 5;
  for (const std::string layout : {"half", "interleaved"}) {
    for (bool llama3 : {false, true}) {
      // half layout: partial rotation (rotary_dim < head_dim); interleaved: full.
      const int64_t rd = layout == "half" ? 12 : D;
      Graph g;
      GraphBuilder b(g);
      b.symbol("T", 16);
      Value* x = b.input("x", f32({sym("T"), c(H), c(D)}));
      Value* pos = b.input("positions", i32({sym("T")}));
      Attributes table = rope_attrs(layout, rd, llama3);
      table.set("max_positions", int64_t{64});
      table.set("part", std::string("cos"));
      Value* cos_t = b.gather(b.op1(OpKind::kRopeTable, {}, table), pos);  // [T, rd]
      table.set("part", std::string("sin"));
      Value* sin_t = b.gather(b.op1(OpKind::kRopeTable, {}, table), pos);
      Value* prim = nullptr;
      if (layout == "half") {
        Value* xr = b.slice(x, 2, 0, rd);
        Value* pass = b.slice(x, 2, rd, D);
        Value* rot = b.concat({b.neg(b.slice(xr, 2, rd / 2, rd)), b.slice(xr, 2, 0, rd / 2)}, 2);
        Value* out = b.add(b.mul(xr, b.reshape(cos_t, {0, 1, rd})),
                           b.mul(rot, b.reshape(sin_t, {0, 1, rd})));
        prim = b.concat({out, pass}, 2);
      } else {
        Value* x4 = b.reshape(x, {0, 0, D / 2, 2});
        Value* x0 = b.slice(x4, 3, 0, 1);
        Value* x1 = b.slice(x4, 3, 1, 2);
        Value* c4 = b.slice(b.reshape(cos_t, {0, 1, D / 2, 2}), 3, 0, 1);
        Value* s4 = b.slice(b.reshape(sin_t, {0, 1, D / 2, 2}), 3, 0, 1);
        Value* o0 = b.sub(b.mul(x0, c4), b.mul(x1, s4));
        Value* o1 = b.add(b.mul(x1, c4), b.mul(x0, s4));
        prim = b.reshape(b.concat({o0, o1}, 3), {0, 0, D});
      }
      Value* fused = b.op1(OpKind::kRope, {x, pos}, rope_attrs(layout, rd, llama3));
      b.output("prim", prim);
      b.output("fused", fused);
      ASSERT_TRUE(b.status().ok()) << b.status();
      InputBindings in;
      in.tensors["x"] = random_tensor({T, H, D}, 21);
      in.tensors["positions"] = HostTensor::ints({T}, {0, 1, 17, 63, 40});
      std::vector<HostTensor> out = run_graph(g, in);
      ASSERT_EQ(out.size(), 2u);
      EXPECT_LE(max_rel_err(out[1].f, out[0].f), 1e-6) << layout << " llama3=" << llama3;
    }
  }
}

TEST(ReferenceOpsTest, FusedElementwiseAndGemmMatchPrimitives) {
  Graph g;
  GraphBuilder b(g);
  b.symbol("T", 16);
  Value* x = b.input("x", f32({sym("T"), c(20)}));
  Value* y = b.input("y", f32({sym("T"), c(1)}));
  Value* w = b.param("w", Type{DType::kF32, {c(9), c(20)}});
  Value* bias = b.param("bias", Type{DType::kF32, {c(9)}});
  Value* res = b.input("res", f32({sym("T"), c(9)}));
  Attributes fe;
  fe.set("expr", std::string("add(mul(silu($0), $1), div(exp(neg($0)), 2.5))"));
  fe.set("dtype", DType::kF32);
  b.output("fused", b.op1(OpKind::kFusedElementwise, {x, y}, fe));
  b.output("prim",
           b.add(b.mul(b.silu(x), y), b.div(b.exp(b.neg(x)), b.constant(2.5, DType::kF32))));
  Attributes ep;
  ep.set("epilogue", std::string("bias_residual"));
  b.output("gemm", b.op1(OpKind::kGemm, {x, w, bias, res}, ep));
  b.output("mm", b.add(b.add(b.matmul(x, w), bias), res));
  ASSERT_TRUE(b.status().ok()) << b.status();
  std::vector<float> wv = random_floats(180, 31), bv = random_floats(9, 32);
  InputBindings in;
  in.tensors["x"] = random_tensor({6, 20}, 33);
  in.tensors["y"] = random_tensor({6, 1}, 34);
  in.tensors["res"] = random_tensor({6, 9}, 35);
  std::vector<HostTensor> out = run_graph(g, in,
                                          {{"w", ParamView{DType::kF32, {9, 20}, wv.data()}},
                                           {"bias", ParamView{DType::kF32, {9}, bv.data()}}});
  ASSERT_EQ(out.size(), 4u);
  EXPECT_LE(max_rel_err(out[0].f, out[1].f), 1e-6);
  EXPECT_LE(max_rel_err(out[2].f, out[3].f), 1e-6);
}

// fast_expf replaces std::exp in the elementwise loops; it must stay within 2 ulp of the exact
// value over the whole range it accepts (every 331st float: ~6.5M values, both signs).
TEST(ReferenceOpsTest, FastExpIsWithinTwoUlpOfExp) {
  double worst = 0;
  float worst_at = 0;
  for (const float end : {kFastExpMin, kFastExpMax}) {  // the negative floats, then the positive
    uint32_t last;
    std::memcpy(&last, &end, 4);
    for (uint32_t bits = end < 0 ? 0x80000000u : 0u; bits <= last; bits += 331) {
      float x;
      std::memcpy(&x, &bits, 4);
      const double want = std::exp(static_cast<double>(x));
      const double rel = std::fabs(fast_expf(x) - want) / want;
      if (rel > worst) {
        worst = rel;
        worst_at = x;
      }
    }
  }
  EXPECT_LE(worst, 2 * 5.96e-8) << "at x = " << worst_at;
  // Outside the range: clamped, never inf, NaN or 0 (SiLU of a huge negative value stays ~0).
  EXPECT_EQ(fast_expf(-1000.0f), fast_expf(kFastExpMin));
  EXPECT_EQ(fast_expf(1000.0f), fast_expf(kFastExpMax));
  EXPECT_TRUE(std::isfinite(fast_expf(1000.0f)));
  EXPECT_NEAR(fast_siluf(-1000.0f), 0.0f, 1e-30f);
  EXPECT_EQ(fast_siluf(1000.0f), 1000.0f);
}

// Split over a pool's threads by rows, fused_elementwise gives exactly what one thread gives,
// with broadcast inputs of either kind (a row vector and a column) and rows longer than a block.
TEST(ReferenceOpsTest, FusedElementwiseThreadedEqualsSingleThreaded) {
  absl::StatusOr<Expr> expr = Expr::parse("add(mul(silu($0), $1), exp(neg($2)))");
  ASSERT_TRUE(expr.ok()) << expr.status();
  const int64_t rows = 67, len = 700;  // 700 = two full blocks of 256 and a partial one
  const std::vector<float> x = random_floats(rows * len, 41), row = random_floats(len, 42),
                           col = random_floats(rows, 43);
  const std::vector<FView> xs = {{x.data(), {rows, len}}, {row.data(), {len}},
                                 {col.data(), {rows, 1}}};
  std::vector<float> one(rows * len), many(rows * len);
  fused_elementwise(*expr, xs, {rows, len}, one.data(), nullptr);
  ThreadPool pool(3);
  fused_elementwise(*expr, xs, {rows, len}, many.data(), &pool);
  EXPECT_EQ(one, many);
  for (int64_t r : {int64_t{0}, int64_t{33}, rows - 1}) {
    for (int64_t j : {int64_t{0}, int64_t{255}, int64_t{256}, len - 1}) {
      const float v = x[r * len + j];
      const float want = v / (1 + std::exp(-v)) * row[j] + std::exp(-col[r]);
      EXPECT_NEAR(one[r * len + j], want, 1e-6f * std::max(1.0f, std::fabs(want)));
    }
  }
}

// Prefill-sized rope and rmsnorm(+residual) split over a pool's threads give exactly what one
// thread gives (sizes past their thresholds: 96 tokens, 96 x 576 values), and rope still names a
// negative position with a pool.
TEST(ReferenceOpsTest, ThreadedRopeAndRmsNormEqualSingleThreaded) {
  ThreadPool pool(3);
  const int64_t T = 96, H = 3, D = 16, h = 576;
  const std::vector<float> x = random_floats(T * H * D, 51);
  std::vector<int32_t> pos(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>(7 * t + 3);
  const FView xv{x.data(), {T, H, D}};
  const IView pv{pos.data(), {T}};
  std::vector<float> one(x.size()), many(x.size());
  const Attributes attrs = rope_attrs("half", 12, true);
  ASSERT_TRUE(rope(xv, pv, attrs, one.data(), nullptr).ok());
  ASSERT_TRUE(rope(xv, pv, attrs, many.data(), &pool).ok());
  EXPECT_EQ(one, many);
  pos[T - 5] = -1;
  absl::Status bad = rope(xv, pv, attrs, many.data(), &pool);
  EXPECT_EQ(bad.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(bad.message().find("positions[91] = -1"), std::string::npos) << bad;

  const std::vector<float> a = random_floats(T * h, 52), r = random_floats(T * h, 53),
                           w = random_floats(h, 54);
  const FView av{a.data(), {T, h}};
  for (bool residual : {false, true}) {
    std::vector<float> y1(T * h), y2(T * h), s1(T * h), s2(T * h);
    rmsnorm(av, residual ? r.data() : nullptr, w.data(), 1e-5, y1.data(),
            residual ? s1.data() : nullptr, nullptr);
    rmsnorm(av, residual ? r.data() : nullptr, w.data(), 1e-5, y2.data(),
            residual ? s2.data() : nullptr, &pool);
    EXPECT_EQ(y1, y2) << residual;
    EXPECT_EQ(s1, s2) << residual;
  }
}

}  // namespace
}  // namespace kiln
