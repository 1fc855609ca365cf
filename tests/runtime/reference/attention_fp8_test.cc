// Paged attention over an fp8e4m3 KV cache on the reference backend: kv_write stores each
// (token, KV head) row as e4m3 codes of row / scale with scale = max|row| / 448 at the row's own
// slot of the scale array, leaving every other slot alone; the fused flash_attention equals the
// primitive chain over the same codes; and attention over the codes stays within e4m3's rounding
// of attention over the exact rows (a bound derived below).
#include <cmath>

#include "gtest/gtest.h"
#include "ir/ops.h"
#include "runtime/reference/ops.h"
#include "tests/runtime/reference/test_util.h"

namespace kiln {
namespace {

using namespace kiln::testing;  // NOLINT: test helpers

constexpr int64_t kHq = 4, kHkv = 2, kD = 16, kNP = 6, kPS = 4;
const double kScale = 1.0 / std::sqrt(static_cast<double>(kD));

struct Inputs {
  Value *q, *k, *v, *k_cache, *v_cache, *k_scales = nullptr, *v_scales = nullptr, *positions,
                                        *slots;
  PageTableOperands pages;
};

// The step's inputs; `fp8`: fp8e4m3 caches with their scale arrays (else f32 caches).
Inputs declare(GraphBuilder& b, bool fp8) {
  b.symbol("T", 32);
  b.symbol("S", 4);
  b.symbol("P", 16);
  b.symbol("K", 64);
  const Type cache{fp8 ? DType::kFP8E4M3 : DType::kF32, {c(kNP), c(kPS), c(kHkv), c(kD)}};
  Inputs in;
  in.q = b.input("q", f32({sym("T"), c(kHq), c(kD)}));
  in.k = b.input("k", f32({sym("T"), c(kHkv), c(kD)}));
  in.v = b.input("v", f32({sym("T"), c(kHkv), c(kD)}));
  in.k_cache = b.input("k_cache", cache);
  in.v_cache = b.input("v_cache", cache);
  if (fp8) {
    in.k_scales = b.input("k_scales", f32({c(kNP), c(kPS), c(kHkv)}));
    in.v_scales = b.input("v_scales", f32({c(kNP), c(kPS), c(kHkv)}));
  }
  in.positions = b.input("positions", i32({sym("T")}));
  in.slots = b.input("slot_mapping", i32({sym("T")}));
  in.pages = {
      b.input("qo_indptr", i32({sym("S", 1)})), b.input("kv_page_indptr", i32({sym("S", 1)})),
      b.input("kv_page_indices", i32({sym("P")})), b.input("kv_last_page_len", i32({sym("S")}))};
  return in;
}

void build_primitive(Graph& g, bool fp8) {
  GraphBuilder b(g);
  Inputs in = declare(b, fp8);
  std::vector<Value*> kw =
      b.op(OpKind::kKvWrite, KvWriteOp::operands(in.k_cache, in.k, in.slots, in.k_scales));
  std::vector<Value*> vw =
      b.op(OpKind::kKvWrite, KvWriteOp::operands(in.v_cache, in.v, in.slots, in.v_scales));
  ASSERT_TRUE(b.status().ok()) << b.status();
  ASSERT_EQ(kw.size(), fp8 ? 2u : 1u);
  Attributes kv_dim;
  kv_dim.set("kv_dim", std::string("K"));
  std::vector<Value*> qk = {in.q, kw[0]};
  std::vector<Value*> pv_tail;
  for (Value* p : in.pages.list()) qk.push_back(p), pv_tail.push_back(p);
  if (fp8) qk.push_back(kw[1]);
  Value* scores = b.op1(OpKind::kPagedQk, qk, kv_dim);
  Value* masked =
      b.op1(OpKind::kCausalMask, {b.mul(scores, b.constant(kScale, DType::kF32)), in.positions});
  Value* e = b.exp(b.sub(masked, b.reduce_max(masked)));
  std::vector<Value*> pv = {b.div(e, b.reduce_sum(e)), vw[0]};
  pv.insert(pv.end(), pv_tail.begin(), pv_tail.end());
  Attributes pv_attrs;
  if (fp8) {
    pv.push_back(vw[1]);
    pv_attrs.set("dtype", DType::kF32);
  }
  b.output("out", b.op1(OpKind::kPagedPv, pv, pv_attrs));
  ASSERT_TRUE(b.status().ok()) << b.status();
}

void build_flash(Graph& g) {
  GraphBuilder b(g);
  Inputs in = declare(b, true);
  Attributes scale;
  scale.set("scale", kScale);
  std::vector<Value*> r =
      b.op(OpKind::kFlashAttention,
           FlashAttentionOp::operands({in.q, in.k, in.v, in.k_cache, in.v_cache, in.positions,
                                       in.slots, in.pages, in.k_scales, in.v_scales}),
           scale);
  ASSERT_TRUE(b.status().ok()) << b.status();
  ASSERT_EQ(r.size(), 5u);
  b.output("out", r[FlashAttentionOp::kOutput]);
}

// Sequence 0: a prefill of 5 tokens (pages 4, 1); sequence 1: 3 cached rows then a decode (page
// 2). The cached rows hold e4m3 codes with their scales; every other slot holds garbage codes.
struct Step {
  InputBindings in;
  std::vector<float> k_cache, v_cache, k_scales, v_scales;  // fp8: codes' values and scales
  std::vector<float> k_exact, v_exact;                      // the same rows unquantized (f32)
  static constexpr int64_t T = 6;
  std::vector<int32_t> slots = {4 * kPS,     4 * kPS + 1, 4 * kPS + 2,
                                4 * kPS + 3, 1 * kPS,     2 * kPS + 3};

  explicit Step(bool fp8) {
    const int64_t rows = kNP * kPS * kHkv;
    k_exact = random_floats(rows * kD, 200, -2, 2);
    v_exact = random_floats(rows * kD, 201);
    k_cache = k_exact, v_cache = v_exact;
    k_scales.assign(rows, 0.0f), v_scales.assign(rows, 0.0f);
    if (fp8) {  // the cache as an earlier kv_write left it
      for (int64_t r = 0; r < rows; ++r) {
        k_scales[r] = quantize_row_fp8e4m3(&k_exact[r * kD], kD, &k_cache[r * kD]);
        v_scales[r] = quantize_row_fp8e4m3(&v_exact[r * kD], kD, &v_cache[r * kD]);
      }
    }
    in.tensors["q"] = random_tensor({T, kHq, kD}, 202, -2, 2);
    in.tensors["k"] = random_tensor({T, kHkv, kD}, 203, -2, 2);
    in.tensors["v"] = random_tensor({T, kHkv, kD}, 204);
    in.tensors["positions"] = HostTensor::ints({T}, {0, 1, 2, 3, 4, 3});
    in.tensors["slot_mapping"] = HostTensor::ints({T}, slots);
    in.tensors["qo_indptr"] = HostTensor::ints({3}, {0, 5, 6});
    in.tensors["kv_page_indptr"] = HostTensor::ints({3}, {0, 2, 3});
    in.tensors["kv_page_indices"] = HostTensor::ints({3}, {4, 1, 2});
    in.tensors["kv_last_page_len"] = HostTensor::ints({2}, {1, 4});
    in.caches["k_cache"] = KvCacheView{k_cache.data(), {kNP, kPS, kHkv, kD}};
    in.caches["v_cache"] = KvCacheView{v_cache.data(), {kNP, kPS, kHkv, kD}};
    if (fp8) {
      in.caches["k_scales"] = KvCacheView{k_scales.data(), {kNP, kPS, kHkv}};
      in.caches["v_scales"] = KvCacheView{v_scales.data(), {kNP, kPS, kHkv}};
    }
  }
};

TEST(ReferenceFp8Attention, KvWriteQuantizesEachRowWithItsOwnScale) {
  Graph g;
  build_primitive(g, true);
  Step step(true);
  const std::vector<float> codes_before = step.k_cache, scales_before = step.k_scales;
  run_graph(g, step.in);
  const std::vector<float>& k = step.in.tensors["k"].f;
  std::vector<bool> written(kNP * kPS, false);
  for (int64_t t = 0; t < Step::T; ++t) {
    written[step.slots[t]] = true;
    for (int64_t h = 0; h < kHkv; ++h) {
      const float* x = &k[(t * kHkv + h) * kD];
      const int64_t r = step.slots[t] * kHkv + h;
      float amax = 0;
      for (int64_t i = 0; i < kD; ++i) amax = std::max(amax, std::fabs(x[i]));
      ASSERT_EQ(step.k_scales[r], amax / 448.0f) << "slot " << step.slots[t] << " head " << h;
      for (int64_t i = 0; i < kD; ++i) {
        const float code = step.k_cache[r * kD + i];
        // A code is an e4m3 value, and the nearest one to x * 448 / amax.
        EXPECT_EQ(fp8e4m3_to_f32(f32_to_fp8e4m3(code)), code);
        EXPECT_EQ(code, fp8e4m3_to_f32(f32_to_fp8e4m3(x[i] * (448.0f / amax))));
        // Dequantized: within half an e4m3 step (2^-4 relative for normals; the subnormals'
        // 2^-10 * scale absolutely) of the row.
        EXPECT_LE(std::fabs(code * step.k_scales[r] - x[i]),
                  std::fabs(x[i]) * 0.0625f + step.k_scales[r] * 0.0009765625f + 1e-7f);
      }
    }
  }
  // Slots this step did not write keep their codes and scales.
  for (int64_t slot = 0; slot < kNP * kPS; ++slot) {
    if (written[slot]) continue;
    for (int64_t h = 0; h < kHkv; ++h) {
      const int64_t r = slot * kHkv + h;
      EXPECT_EQ(step.k_scales[r], scales_before[r]);
      for (int64_t i = 0; i < kD; ++i)
        EXPECT_EQ(step.k_cache[r * kD + i], codes_before[r * kD + i]);
    }
  }
}

TEST(ReferenceFp8Attention, AnAllZeroRowHasScaleZeroAndZeroCodes) {
  std::vector<float> codes(kD, 5.0f);
  const std::vector<float> zeros(kD, 0.0f);
  EXPECT_EQ(quantize_row_fp8e4m3(zeros.data(), kD, codes.data()), 0.0f);
  for (float x : codes) EXPECT_EQ(x, 0.0f);
}

TEST(ReferenceFp8Attention, FlashAttentionEqualsPrimitiveChain) {
  Graph prim, flash;
  build_primitive(prim, true);
  build_flash(flash);
  Step a(true), b(true);
  std::vector<HostTensor> want = run_graph(prim, a.in);
  std::vector<HostTensor> got = run_graph(flash, b.in);
  ASSERT_EQ(want.size(), 1u);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_LE(max_rel_err(got[0].f, want[0].f), 1e-5);
  EXPECT_EQ(a.k_cache, b.k_cache);
  EXPECT_EQ(a.v_cache, b.v_cache);
  EXPECT_EQ(a.k_scales, b.k_scales);
  EXPECT_EQ(a.v_scales, b.v_scales);
}

// Against the same attention over the exact rows (f32 caches holding the unquantized values):
// each K and V element is off by at most half an e4m3 step, 2^-4 of itself (subnormal codes are
// rows' elements below max|row| / 448 * 2^-6, absolutely smaller still). A score q·k (|q| <= 2,
// |k| <= 2, D = 16, scaled by 1/4) then moves by at most 2^-4 * Σ|q_i k_i| / 4 <= 2^-4 * 16 = 1
// in the worst case, ~0.1 for random signs; softmax weights move by a factor e^Δ, and the output
// (|v| <= 1) by about Δ + 2^-4. So 0.25 absolutely bounds it with margin, and the error must
// not be zero (the codes are not the exact values).
TEST(ReferenceFp8Attention, WithinE4M3RoundingOfExactAttention) {
  Graph fp8_graph, exact_graph;
  build_primitive(fp8_graph, true);
  build_primitive(exact_graph, false);
  Step quantized(true), exact(false);
  std::vector<HostTensor> got = run_graph(fp8_graph, quantized.in);
  std::vector<HostTensor> want = run_graph(exact_graph, exact.in);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(want.size(), 1u);
  double worst = 0;
  for (size_t i = 0; i < want[0].f.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(got[0].f[i] - want[0].f[i])));
  }
  EXPECT_LE(worst, 0.25);
  EXPECT_GT(worst, 0.0);
}

TEST(ReferenceFp8Attention, TypeChecksNameTheMissingScales) {
  // An fp8e4m3 cache without its scale array, and a bf16 cache with one, are errors that say so.
  Graph g;
  GraphBuilder b(g);
  Inputs in = declare(b, true);
  b.op(OpKind::kKvWrite, {in.k_cache, in.k, in.slots});
  ASSERT_FALSE(b.status().ok());
  EXPECT_NE(b.status().message().find("fp8e4m3 KV cache, which needs its scale array"),
            std::string::npos)
      << b.status();
  Graph g2;
  GraphBuilder b2(g2);
  Inputs in2 = declare(b2, false);
  Value* scales = b2.input("scales", f32({c(kNP), c(kPS), c(kHkv)}));
  b2.op(OpKind::kKvWrite, {in2.k_cache, in2.k, in2.slots, scales});
  ASSERT_FALSE(b2.status().ok());
  EXPECT_NE(b2.status().message().find("only fp8e4m3 caches take scale arrays"), std::string::npos)
      << b2.status();
}

}  // namespace
}  // namespace kiln
