// Type inference: broadcasting, symbolic dims, and each op's checks.
#include "ir/type_inference.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ir/builder.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;

Dim T() { return Dim::symbolic("T"); }
Dim C(int64_t v) { return Dim::constant(v); }

class TypeInference : public ::testing::Test {
 protected:
  TypeInference() {
    EXPECT_TRUE(symbols_.add({"T", 128}).ok());
    EXPECT_TRUE(symbols_.add({"S", 4}).ok());
    EXPECT_TRUE(symbols_.add({"K", 1024}).ok());
  }
  absl::StatusOr<std::vector<Type>> infer(OpKind op, std::vector<Type> in, Attributes a = {}) {
    return infer_types(op, in, a, symbols_);
  }
  SymbolTable symbols_;
};

TEST_F(TypeInference, BroadcastKeepsSymbolicDims) {
  auto out = infer(OpKind::kMul, {{DType::kF32, {T(), C(576)}}, {DType::kF32, {T(), C(1)}}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0].to_string(), "f32[T,576]");
  out = infer(OpKind::kMul, {{DType::kF32, {T(), C(576)}}, {DType::kF32, {C(576)}}});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ((*out)[0].to_string(), "f32[T,576]");
  out = infer(OpKind::kAdd, {{DType::kF32, {T(), C(4)}}, {DType::kF32, {}}});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ((*out)[0].to_string(), "f32[T,4]");
}

TEST_F(TypeInference, BroadcastRejectsDifferentSymbolsAndSizes) {
  auto out = infer(OpKind::kAdd, {{DType::kF32, {T()}}, {DType::kF32, {Dim::symbolic("S")}}});
  EXPECT_THAT(out.status().message(), HasSubstr("do not broadcast"));
  out = infer(OpKind::kAdd, {{DType::kF32, {C(3)}}, {DType::kF32, {C(4)}}});
  EXPECT_FALSE(out.ok());
  out = infer(OpKind::kAdd, {{DType::kF32, {C(3)}}, {DType::kBF16, {C(3)}}});
  EXPECT_THAT(out.status().message(), HasSubstr("different dtypes"));
}

TEST_F(TypeInference, MatmulContractsTheLastDim) {
  auto out =
      infer(OpKind::kMatmul, {{DType::kBF16, {T(), C(576)}}, {DType::kBF16, {C(1536), C(576)}}});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ((*out)[0].to_string(), "bf16[T,1536]");
  out = infer(OpKind::kMatmul, {{DType::kBF16, {T(), C(64)}}, {DType::kBF16, {C(1536), C(576)}}});
  EXPECT_THAT(out.status().message(), HasSubstr("contraction dim mismatch: 64 vs 576"));
}

TEST_F(TypeInference, ReshapeCopiesSymbolicDimsAndChecksCount) {
  Attributes a;
  a.set("shape", IntList{0, 9, 64});
  auto out = infer(OpKind::kReshape, {{DType::kF32, {T(), C(576)}}}, a);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0].to_string(), "f32[T,9,64]");
  a.set("shape", IntList{0, 9, 60});
  EXPECT_THAT(infer(OpKind::kReshape, {{DType::kF32, {T(), C(576)}}}, a).status().message(),
              HasSubstr("changes the element count"));
  a.set("shape", IntList{576});  // drops the symbolic dim
  EXPECT_FALSE(infer(OpKind::kReshape, {{DType::kF32, {T(), C(576)}}}, a).ok());
}

TEST_F(TypeInference, LastTokenRowsUsesTheIndptrSymbol) {
  auto out = infer(OpKind::kLastTokenRows,
                   {{DType::kF32, {T(), C(8)}}, {DType::kI32, {Dim::symbolic("S", 1)}}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0].to_string(), "f32[S,8]");
}

TEST_F(TypeInference, PagedQkChecksGqaAndKvSymbol) {
  Type q{DType::kF32, {T(), C(9), C(64)}};
  Type cache{DType::kF32, {C(100), C(16), C(3), C(64)}};
  Type idx{DType::kI32, {Dim::symbolic("S", 1)}};
  Attributes a;
  a.set("kv_dim", std::string("K"));
  auto out = infer(OpKind::kPagedQk, {q, cache, idx, idx, idx, idx}, a);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)[0].to_string(), "f32[T,9,K]");
  Type bad_cache{DType::kF32, {C(100), C(16), C(4), C(64)}};
  EXPECT_THAT(infer(OpKind::kPagedQk, {q, bad_cache, idx, idx, idx, idx}, a).status().message(),
              HasSubstr("multiple of KV heads"));
  a.set("kv_dim", std::string("Q"));
  EXPECT_THAT(infer(OpKind::kPagedQk, {q, cache, idx, idx, idx, idx}, a).status().message(),
              HasSubstr("unknown symbol Q"));
}

TEST_F(TypeInference, MissingAndMistypedAttributesAreNamed) {
  EXPECT_THAT(infer(OpKind::kRmsNorm, {{DType::kF32, {T(), C(8)}}, {DType::kF32, {C(8)}}})
                  .status()
                  .message(),
              HasSubstr("missing attribute 'eps'"));
  Attributes a;
  a.set("eps", std::string("small"));
  EXPECT_THAT(infer(OpKind::kRmsNorm, {{DType::kF32, {T(), C(8)}}, {DType::kF32, {C(8)}}}, a)
                  .status()
                  .message(),
              HasSubstr("attribute 'eps' is a string, expected a float"));
}

TEST_F(TypeInference, InputCountIsChecked) {
  EXPECT_THAT(infer(OpKind::kExp, {}).status().message(), HasSubstr("takes 1 inputs, got 0"));
}

TEST_F(TypeInference, RmsNormResidualHasTwoResults) {
  Attributes a;
  a.set("eps", 1e-5);
  Type x{DType::kBF16, {T(), C(576)}};
  auto out = infer(OpKind::kRmsNormResidual, {x, x, {DType::kBF16, {C(576)}}}, a);
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->size(), 2u);
  EXPECT_EQ((*out)[1], x);
  EXPECT_FALSE(infer(OpKind::kRmsNormResidual, {x, x, {DType::kBF16, {C(575)}}}, a).ok());
}

TEST_F(TypeInference, GemmEpilogues) {
  Type x{DType::kF32, {T(), C(8)}}, w{DType::kF32, {C(4), C(8)}}, bias{DType::kF32, {C(4)}},
      res{DType::kF32, {T(), C(4)}};
  Attributes a;
  a.set("epilogue", std::string("bias"));
  EXPECT_TRUE(infer(OpKind::kGemm, {x, w, bias}, a).ok());
  a.set("epilogue", std::string("residual"));
  EXPECT_TRUE(infer(OpKind::kGemm, {x, w, res}, a).ok());
  EXPECT_FALSE(infer(OpKind::kGemm, {x, w, bias}, a).ok());
  a.set("epilogue", std::string("gelu"));
  EXPECT_THAT(infer(OpKind::kGemm, {x, w}, a).status().message(),
              HasSubstr("unknown gemm epilogue"));
}

TEST_F(TypeInference, Collectives) {
  Attributes r2;
  r2.set("ranks", int64_t{2});
  auto reduced = infer(OpKind::kAllReduce, {{DType::kBF16, {T(), C(576)}}}, r2);
  ASSERT_TRUE(reduced.ok()) << reduced.status();
  EXPECT_EQ((*reduced)[0].to_string(), "bf16[T,576]");
  Attributes g = r2;
  g.set("axis", int64_t{-1});
  auto gathered = infer(OpKind::kAllGather, {{DType::kF32, {Dim::symbolic("S"), C(256)}}}, g);
  ASSERT_TRUE(gathered.ok()) << gathered.status();
  EXPECT_EQ((*gathered)[0].to_string(), "f32[S,512]");
  g.set("axis", int64_t{0});
  EXPECT_THAT(infer(OpKind::kAllGather, {{DType::kF32, {T(), C(4)}}}, g).status().message(),
              HasSubstr("all_gather along symbolic dim T"));
  EXPECT_THAT(infer(OpKind::kAllReduce, {{DType::kF32, {T()}}}).status().message(),
              HasSubstr("ranks"));
  Attributes zero;
  zero.set("ranks", int64_t{0});
  EXPECT_THAT(infer(OpKind::kAllReduce, {{DType::kF32, {T()}}}, zero).status().message(),
              HasSubstr("'ranks' must be positive"));
  EXPECT_THAT(infer(OpKind::kAllReduce, {{DType::kI32, {T()}}}, r2).status().message(),
              HasSubstr("must be a float tensor"));
}

TEST(GraphBuilder, KeepsTheFirstErrorAndNamesTheOp) {
  Graph g;
  GraphBuilder b(g);
  b.symbol("T", 16);
  Value* x = b.input("x", {DType::kF32, {Dim::symbolic("T"), Dim::constant(8)}});
  Value* w = b.param("w", {DType::kF32, {Dim::constant(4), Dim::constant(7)}});
  Value* y = b.matmul(x, w);
  EXPECT_EQ(y, nullptr);
  EXPECT_EQ(b.exp(y), nullptr);
  EXPECT_THAT(b.status().message(), HasSubstr("matmul: matmul contraction dim mismatch"));
}

TEST(Symbols, UpperBoundsResolve) {
  SymbolTable t;
  ASSERT_TRUE(t.add({"S", 64}).ok());
  EXPECT_EQ(*t.upper_bound(Dim::symbolic("S", 1)), 65);
  EXPECT_EQ(*t.max_elements({Dim::symbolic("S"), Dim::constant(3)}), 192);
  EXPECT_FALSE(t.add({"S", 2}).ok());
  EXPECT_FALSE(t.upper_bound(Dim::symbolic("Q")).ok());
  SymbolBindings b;
  b.set("S", 5);
  EXPECT_EQ(*b.resolve(Dim::symbolic("S", 1)), 6);
}

}  // namespace
}  // namespace kiln
