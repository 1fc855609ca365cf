// ReferenceExecutor: binding errors name the input/param, index errors name the op, and every
// op of tests/ir/testdata/all_ops.kir runs on random inputs with valid page metadata.
#include "runtime/reference/executor.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ir/parser.h"
#include "tests/ir/test_util.h"
#include "tests/runtime/reference/test_util.h"

namespace kiln {
namespace {

using namespace kiln::testing;  // NOLINT: test helpers

struct Embed {
  Graph g;
  std::vector<float> table = random_floats(40, 5);
  Embed() {
    GraphBuilder b(g);
    b.symbol("T", 8);
    Value* e = b.gather(b.param("embed", f32({c(10), c(4)})), b.input("tokens", i32({sym("T")})));
    b.output("x", b.mul(e, b.input("gain", f32({c(4)}))));
  }
  ParamViews params() { return {{"embed", ParamView{DType::kF32, {10, 4}, table.data()}}}; }
  InputBindings inputs() {
    InputBindings in;
    in.tensors["tokens"] = HostTensor::ints({3}, {1, 9, 0});
    in.tensors["gain"] = random_tensor({4}, 6);
    return in;
  }
};

void expect_create_error(Graph& g, ParamViews p, const char* substring) {
  auto ex = ReferenceExecutor::create(g, std::move(p), 1);
  ASSERT_FALSE(ex.ok()) << substring;
  EXPECT_NE(ex.status().message().find(substring), std::string::npos) << ex.status();
}

void expect_run_error(Embed& e, const InputBindings& in, const char* substring) {
  auto ex = ReferenceExecutor::create(e.g, e.params(), 1);
  ASSERT_TRUE(ex.ok()) << ex.status();
  auto out = (*ex)->run(in);
  ASSERT_FALSE(out.ok()) << substring;
  EXPECT_NE(out.status().message().find(substring), std::string::npos) << out.status();
}

TEST(ReferenceExecutorTest, ParamBindingErrors) {
  Embed e;
  expect_create_error(e.g, {}, "param @embed (f32[10,4]) is not bound");
  ParamViews p = e.params();
  p["embed"].shape = {10, 5};
  expect_create_error(e.g, p,
                      "param @embed is bound with shape [10,5] but the graph declares f32[10,4]");
  p = e.params();
  p["embed"].dtype = DType::kBF16;
  expect_create_error(e.g, p, "param @embed is bound as bf16");
  p = e.params();
  p["extra"] = p["embed"];
  expect_create_error(e.g, p, "binding for unknown param @extra");
}

TEST(ReferenceExecutorTest, InputBindingErrors) {
  Embed e;
  InputBindings in = e.inputs();
  in.tensors.erase("gain");
  expect_run_error(e, in, "input %gain (f32[4]) is not bound");
  in = e.inputs();
  in.tensors["bogus"] = random_tensor({1}, 1);
  expect_run_error(e, in, "binding for unknown input %bogus");
  in = e.inputs();
  in.tensors["gain"] = random_tensor({5}, 1);
  expect_run_error(e, in, "input %gain has shape [5] but the graph declares f32[4]");
  in = e.inputs();
  in.tensors["tokens"] = random_tensor({3}, 1);
  expect_run_error(e, in, "input %tokens is bound as f32 but the graph declares i32[T]");
  in = e.inputs();
  in.tensors["tokens"] = HostTensor::ints({9}, std::vector<int32_t>(9, 1));
  expect_run_error(e, in, "symbol T = 9 is outside [0, 8]");
  in = e.inputs();
  in.tensors["tokens"].i[1] = 10;
  expect_run_error(e, in, "= gather: index [1] = 10 is out of range [0, 10)");
  // And the happy path.
  auto ex = ReferenceExecutor::create(e.g, e.params(), 1);
  ASSERT_TRUE(ex.ok());
  in = e.inputs();
  auto out = (*ex)->run(in);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0].shape, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ((*out)[0].f[4 + 2], e.table[9 * 4 + 2] * in.tensors["gain"].f[2]);
}

TEST(ReferenceExecutorTest, AllOpsSmoke) {
  absl::StatusOr<std::unique_ptr<Graph>> g =
      parse_graph(read_source_file("tests/ir/testdata/all_ops.kir"));
  ASSERT_TRUE(g.ok()) << g.status();
  ParamViews params;
  std::vector<std::vector<float>> storage;
  for (const Value* p : (*g)->params()) {
    std::vector<int64_t> shape;
    for (const Dim& d : p->type.shape) shape.push_back(d.value);
    storage.push_back(random_floats(num_elements(shape), 40 + p->id));
    params[p->name] = ParamView{DType::kF32, shape, storage.back().data()};
  }
  auto ex = ReferenceExecutor::create(**g, params, 2);
  ASSERT_TRUE(ex.ok()) << ex.status();
  // 2 sequences: 3 new tokens after 2 cached (pages 4, 9), 1 new token after 20 (pages 0, 7).
  const int64_t NP = 12;
  std::vector<float> k_cache = random_floats(NP * 16 * 2 * 8, 50);
  std::vector<float> v_cache = random_floats(NP * 16 * 2 * 8, 51);
  InputBindings in;
  in.tensors["tokens"] = HostTensor::ints({4}, {5, 99, 0, 42});
  in.tensors["positions"] = HostTensor::ints({4}, {2, 3, 4, 20});
  in.tensors["slot_mapping"] = HostTensor::ints({4}, {4 * 16 + 2, 4 * 16 + 3, -1, 7 * 16 + 4});
  in.tensors["qo_indptr"] = HostTensor::ints({3}, {0, 3, 4});
  in.tensors["kv_page_indptr"] = HostTensor::ints({3}, {0, 1, 3});
  in.tensors["kv_page_indices"] = HostTensor::ints({3}, {4, 0, 7});
  in.tensors["kv_last_page_len"] = HostTensor::ints({2}, {5, 5});
  in.caches["k_cache"] = KvCacheView{k_cache.data(), {NP, 16, 2, 8}};
  in.caches["v_cache"] = KvCacheView{v_cache.data(), {NP, 16, 2, 8}};
  auto out = (*ex)->run(in);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 5u);
  EXPECT_EQ((*out)[0].shape, (std::vector<int64_t>{2, 32}));    // logits [S, 32]
  EXPECT_EQ((*out)[1].shape, (std::vector<int64_t>{4, 4, 8}));  // pv
  EXPECT_EQ((*out)[4].shape, (std::vector<int64_t>{256, 8}));   // cos table
  // The fixture's arithmetic is only type-correct (rsqrt of a possibly negative value, pv of
  // unnormalized -inf scores), so only logits, att and cos must be finite.
  for (int i : {0, 2, 4}) {
    for (float v : (*out)[i].f) EXPECT_TRUE(std::isfinite(v)) << i;
  }
  // Running the same step again is deterministic (caches only receive the same rows again).
  auto again = (*ex)->run(in);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)[0].f, (*out)[0].f);
}

// The collectives over two ranks in one process: all_reduce sums the ranks' buffers (every rank
// gets the sum), all_gather concatenates them along its axis in rank order; each rank binds its
// own inputs and params.
TEST(ReferenceExecutorTest, CollectivesSumAndConcatenateOverTheRanks) {
  auto g = parse_graph(R"(graph @c {
  ranks 2
  input %x : f32[3,2]
  param @w : f32[2,2] = shards(rows("w"[0:2]), rows("w"[2:4]))
  %y = matmul(%x, @w) : f32[3,2]
  %s = all_reduce(%y) {ranks = 2} : f32[3,2]
  %c = all_gather(%x) {axis = 1, ranks = 2} : f32[3,4]
  %r = all_gather(%x) {axis = 0, ranks = 2} : f32[6,2]
  output s = %s
  output c = %c
  output r = %r
})");
  ASSERT_TRUE(g.ok()) << g.status();
  std::vector<float> w0 = {1, 0, 0, 1}, w1 = {2, 0, 0, 3};  // rank 0: identity; rank 1: diag(2, 3)
  std::vector<ParamViews> params(2);
  params[0]["w"] = ParamView{DType::kF32, {2, 2}, w0.data()};
  params[1]["w"] = ParamView{DType::kF32, {2, 2}, w1.data()};
  auto ex = ReferenceExecutor::create_ranks(**g, params, 1);
  ASSERT_TRUE(ex.ok()) << ex.status();
  std::vector<InputBindings> in(2);
  in[0].tensors["x"] = HostTensor::floats({3, 2}, {1, 2, 3, 4, 5, 6});
  in[1].tensors["x"] = HostTensor::floats({3, 2}, {10, 20, 30, 40, 50, 60});
  auto out = (*ex)->run_ranks(in);
  ASSERT_TRUE(out.ok()) << out.status();
  // x0·I + x1·diag(2, 3)
  EXPECT_EQ((*out)[0].f, (std::vector<float>{21, 62, 63, 124, 105, 186}));
  EXPECT_EQ((*out)[1].f, (std::vector<float>{1, 2, 10, 20, 3, 4, 30, 40, 5, 6, 50, 60}));
  EXPECT_EQ((*out)[2].f, (std::vector<float>{1, 2, 3, 4, 5, 6, 10, 20, 30, 40, 50, 60}));
  // One rank's bindings for a two-rank graph, and the one-rank entry points, are refused.
  EXPECT_THAT(std::string((*ex)->run(in[0]).status().message()),
              ::testing::HasSubstr("bind each rank's inputs (run_ranks)"));
  EXPECT_THAT(std::string((*ex)->run_ranks({in[0]}).status().message()),
              ::testing::HasSubstr("runs on 2 rank(s) but 1 input sets are bound"));
  EXPECT_THAT(std::string(ReferenceExecutor::create(**g, params[0], 1).status().message()),
              ::testing::HasSubstr("create_ranks"));
  params[1].erase("w");
  EXPECT_THAT(std::string(ReferenceExecutor::create_ranks(**g, params, 1).status().message()),
              ::testing::HasSubstr("rank 1: param @w (f32[2,2]) is not bound"));
}

}  // namespace
}  // namespace kiln
