// Paged attention on the reference backend: the primitive chain (kv_write, paged_qk, scale,
// causal_mask, softmax, paged_pv) equals dense causal attention computed here, and the fused
// flash_attention equals the primitive chain; bad page metadata gives clear errors.
#include <cmath>

#include "gtest/gtest.h"
#include "tests/runtime/reference/test_util.h"

namespace kiln {
namespace {

using namespace kiln::testing;  // NOLINT: test helpers

constexpr int64_t kHq = 4, kHkv = 2, kD = 8, kNP = 8, kPS = 4;

// Inputs shared by both graphs.
struct AttnInputs {
  std::vector<Value*> v;  // q k v k_cache v_cache positions slot qo indptr indices last
};
AttnInputs declare_inputs(GraphBuilder& b) {
  b.symbol("T", 32);
  b.symbol("S", 4);
  b.symbol("P", 16);
  b.symbol("K", 64);
  AttnInputs in;
  in.v = {b.input("q", f32({sym("T"), c(kHq), c(kD)})),
          b.input("k", f32({sym("T"), c(kHkv), c(kD)})),
          b.input("v", f32({sym("T"), c(kHkv), c(kD)})),
          b.input("k_cache", f32({c(kNP), c(kPS), c(kHkv), c(kD)})),
          b.input("v_cache", f32({c(kNP), c(kPS), c(kHkv), c(kD)})),
          b.input("positions", i32({sym("T")})),
          b.input("slot_mapping", i32({sym("T")})),
          b.input("qo_indptr", i32({sym("S", 1)})),
          b.input("kv_page_indptr", i32({sym("S", 1)})),
          b.input("kv_page_indices", i32({sym("P")})),
          b.input("kv_last_page_len", i32({sym("S")}))};
  return in;
}

const double kScale = 1.0 / std::sqrt(static_cast<double>(kD));

void build_primitive(Graph& g) {
  GraphBuilder b(g);
  AttnInputs a = declare_inputs(b);
  auto& v = a.v;
  Value* kc = b.op1(OpKind::kKvWrite, {v[3], v[1], v[6]});
  Value* vc = b.op1(OpKind::kKvWrite, {v[4], v[2], v[6]});
  Attributes kv_dim;
  kv_dim.set("kv_dim", std::string("K"));
  Value* scores = b.op1(OpKind::kPagedQk, {v[0], kc, v[7], v[8], v[9], v[10]}, kv_dim);
  Value* scaled = b.mul(scores, b.constant(kScale, DType::kF32));
  Value* masked = b.op1(OpKind::kCausalMask, {scaled, v[5]});
  Value* e = b.exp(b.sub(masked, b.reduce_max(masked)));
  Value* p = b.div(e, b.reduce_sum(e));
  b.output("out", b.op1(OpKind::kPagedPv, {p, vc, v[7], v[8], v[9], v[10]}));
  ASSERT_TRUE(b.status().ok()) << b.status();
}

void build_flash(Graph& g) {
  GraphBuilder b(g);
  AttnInputs a = declare_inputs(b);
  Attributes scale;
  scale.set("scale", kScale);
  std::vector<Value*> r = b.op(OpKind::kFlashAttention, a.v, scale);
  ASSERT_TRUE(b.status().ok()) << b.status();
  b.output("out", r[0]);
}

// Two sequences in one step, pages scattered in the pool: sequence 0 is a prefill of 5 tokens
// (pages 6, 1; kv_len 5), sequence 1 decodes 1 token after 6 cached ones (pages 3, 5; kv_len 7).
struct Step {
  InputBindings in;
  std::vector<float> k_cache, v_cache;
  std::vector<std::vector<int>> seq_pages = {{6, 1}, {3, 5}};
  std::vector<int> kv_len = {5, 7};
  std::vector<int> qo = {0, 5, 6};
  int64_t T = 6;

  Step() {
    k_cache = random_floats(kNP * kPS * kHkv * kD, 100);  // garbage everywhere, never zeros
    v_cache = random_floats(kNP * kPS * kHkv * kD, 101);
    in.tensors["q"] = random_tensor({T, kHq, kD}, 102, -2, 2);
    in.tensors["k"] = random_tensor({T, kHkv, kD}, 103, -2, 2);
    in.tensors["v"] = random_tensor({T, kHkv, kD}, 104);
    std::vector<int32_t> positions, slots;
    for (int s = 0; s < 2; ++s) {
      for (int t = qo[s]; t < qo[s + 1]; ++t) {
        const int pos = kv_len[s] - (qo[s + 1] - t);
        positions.push_back(pos);
        slots.push_back(seq_pages[s][pos / kPS] * kPS + pos % kPS);
      }
    }
    in.tensors["positions"] = HostTensor::ints({T}, positions);
    in.tensors["slot_mapping"] = HostTensor::ints({T}, slots);
    in.tensors["qo_indptr"] = HostTensor::ints({3}, {0, 5, 6});
    in.tensors["kv_page_indptr"] = HostTensor::ints({3}, {0, 2, 4});
    in.tensors["kv_page_indices"] = HostTensor::ints({4}, {6, 1, 3, 5});
    in.tensors["kv_last_page_len"] = HostTensor::ints({2}, {1, 3});
    in.caches["k_cache"] = KvCacheView{k_cache.data(), {kNP, kPS, kHkv, kD}};
    in.caches["v_cache"] = KvCacheView{v_cache.data(), {kNP, kPS, kHkv, kD}};
  }

  // Dense causal attention: keys of sequence s are its cached rows then this step's rows.
  std::vector<float> dense() const {
    const auto& q = in.tensors.at("q").f;
    const auto& k = in.tensors.at("k").f;
    const auto& v = in.tensors.at("v").f;
    std::vector<float> out(T * kHq * kD);
    for (int s = 0; s < 2; ++s) {
      const int new_tokens = qo[s + 1] - qo[s];
      const int cached = kv_len[s] - new_tokens;
      auto key = [&](int j, int hk, int d, bool is_v) -> float {
        if (j >= cached) {
          return (is_v ? v : k)[((qo[s] + j - cached) * kHkv + hk) * kD + d];
        }
        const int64_t row = seq_pages[s][j / kPS] * kPS + j % kPS;
        return (is_v ? v_cache : k_cache)[(row * kHkv + hk) * kD + d];
      };
      for (int t = qo[s]; t < qo[s + 1]; ++t) {
        const int pos = cached + (t - qo[s]);
        for (int h = 0; h < kHq; ++h) {
          const int hk = h / (kHq / kHkv);
          std::vector<double> w(pos + 1);
          double mx = -INFINITY, sum = 0;
          for (int j = 0; j <= pos; ++j) {
            double dot = 0;
            for (int d = 0; d < kD; ++d) dot += q[(t * kHq + h) * kD + d] * key(j, hk, d, false);
            w[j] = dot * kScale;
            mx = std::max(mx, w[j]);
          }
          for (double& x : w) sum += (x = std::exp(x - mx));
          for (int d = 0; d < kD; ++d) {
            double o = 0;
            for (int j = 0; j <= pos; ++j) o += w[j] / sum * key(j, hk, d, true);
            out[(t * kHq + h) * kD + d] = static_cast<float>(o);
          }
        }
      }
    }
    return out;
  }
};

TEST(ReferenceAttentionTest, PrimitiveChainEqualsDenseCausalAttention) {
  Graph g;
  build_primitive(g);
  Step step;
  const std::vector<float> want = step.dense();  // before the run writes the caches
  std::vector<HostTensor> out = run_graph(g, step.in);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{6, kHq, kD}));
  EXPECT_LE(max_rel_err(out[0].f, want), 1e-5);
  // The new rows landed in the pool in place.
  const auto& k = step.in.tensors["k"].f;
  const int64_t row = 5 * kPS + 2;  // position 6 of sequence 1: its 2nd page (5), offset 2
  for (int i = 0; i < kHkv * kD; ++i) {
    EXPECT_EQ(step.k_cache[row * kHkv * kD + i], k[5 * kHkv * kD + i]);
  }
}

TEST(ReferenceAttentionTest, FlashAttentionEqualsPrimitiveChain) {
  Graph prim, flash;
  build_primitive(prim);
  build_flash(flash);
  Step a, b;  // identical inputs and caches
  std::vector<HostTensor> want = run_graph(prim, a.in);
  std::vector<HostTensor> got = run_graph(flash, b.in);
  ASSERT_EQ(want.size(), 1u);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_LE(max_rel_err(got[0].f, want[0].f), 1e-5);
  EXPECT_EQ(a.k_cache, b.k_cache);
  EXPECT_EQ(a.v_cache, b.v_cache);
}

void expect_error(Step& step, const char* substring) {
  Graph g;
  build_primitive(g);
  auto ex = ReferenceExecutor::create(g, {}, 1);
  ASSERT_TRUE(ex.ok()) << ex.status();
  absl::StatusOr<std::vector<HostTensor>> out = (*ex)->run(step.in);
  ASSERT_FALSE(out.ok()) << substring;
  EXPECT_NE(out.status().message().find(substring), std::string::npos) << out.status();
}

TEST(ReferenceAttentionTest, BadMetadataIsAnError) {
  {
    Step s;
    s.in.tensors["kv_page_indices"] = HostTensor::ints({4}, {6, 1, 8, 5});
    expect_error(s, "paged_qk: kv_page_indices[2] = 8 is out of range [0, 8)");
  }
  {
    Step s;
    s.in.tensors["slot_mapping"].i[3] = kNP * kPS;
    expect_error(s, "kv_write: slot_mapping[3] = 32 is outside the cache (NP*PS = 32)");
  }
  {
    Step s;
    s.in.tensors["qo_indptr"] = HostTensor::ints({3}, {0, 5, 4});
    expect_error(s, "qo_indptr decreases at [2]");
  }
  {
    Step s;
    s.in.tensors["kv_last_page_len"] = HostTensor::ints({2}, {1, 5});
    expect_error(s, "kv_last_page_len[1] = 5 must be in [1, 4]");
  }
  {
    Step s;
    s.in.tensors["positions"].i[0] = -1;
    expect_error(s, "causal_mask: positions[0] = -1 is negative");
  }
  {
    Step s;
    s.in.symbols.set("K", 6);  // shorter than sequence 1's 7 keys
    expect_error(s, "longest KV length 7 exceeds K = 6");
  }
}

}  // namespace
}  // namespace kiln
