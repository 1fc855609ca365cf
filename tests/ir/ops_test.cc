// Named operand accessors read the operands in the order the IR text form documents
// (ir/op_kind.h), and refuse nodes of another kind or operand count.
#include "ir/ops.h"

#include <gtest/gtest.h>

#include "ir/parser.h"
#include "ir/verifier.h"

namespace kiln {
namespace {

// One layer's attention in the documented operand order, every operand named after its role.
constexpr char kAttention[] = R"(graph @g {
  symbol T <= 8
  symbol S <= 2
  symbol P <= 4
  symbol K <= 16
  input %q : f32[T,4,8]
  input %k : f32[T,2,8]
  input %v : f32[T,2,8]
  input %k_cache : f32[4,4,2,8]
  input %v_cache : f32[4,4,2,8]
  input %positions : i32[T]
  input %slot_mapping : i32[T]
  input %qo_indptr : i32[S+1]
  input %kv_page_indptr : i32[S+1]
  input %kv_page_indices : i32[P]
  input %kv_last_page_len : i32[S]
  input %x : f32[T,32]
  input %residual : f32[T,32]
  param @w : f32[32]
  param @proj : f32[32,32]
  param @bias : f32[32]
  %out, %kc, %vc = flash_attention(%q, %k, %v, %k_cache, %v_cache, %positions, %slot_mapping, %qo_indptr, %kv_page_indptr, %kv_page_indices, %kv_last_page_len) {scale = 0.35} : f32[T,4,8], f32[4,4,2,8], f32[4,4,2,8]
  %normed, %sum = rmsnorm_residual(%x, %residual, @w) {eps = 1e-05} : f32[T,32], f32[T,32]
  %g = gemm(%normed, @proj, @bias, %sum) {epilogue = "bias_residual"} : f32[T,32]
  %g2 = gemm(%normed, @proj, %sum) {epilogue = "residual"} : f32[T,32]
  output y = %out
  output z = %g
  output z2 = %g2
  output kc = %kc
  output vc = %vc
}
)";

std::unique_ptr<Graph> parse_attention() {
  auto g = parse_graph(kAttention);
  EXPECT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(verify(**g).ok()) << verify(**g);
  return std::move(*g);
}

TEST(Ops, FlashAttentionOperandsByName) {
  auto g = parse_attention();
  const Node& n = *g->nodes()[0];
  ASSERT_TRUE(FlashAttentionOp::matches(&n));
  FlashAttentionOp attn(n);
  EXPECT_EQ(attn.q()->name, "q");
  EXPECT_EQ(attn.k()->name, "k");
  EXPECT_EQ(attn.v()->name, "v");
  EXPECT_EQ(attn.k_cache()->name, "k_cache");
  EXPECT_EQ(attn.v_cache()->name, "v_cache");
  EXPECT_EQ(attn.positions()->name, "positions");
  EXPECT_EQ(attn.slot_mapping()->name, "slot_mapping");
  const PageTableOperands pages = attn.pages();
  EXPECT_EQ(pages.qo_indptr->name, "qo_indptr");
  EXPECT_EQ(pages.kv_page_indptr->name, "kv_page_indptr");
  EXPECT_EQ(pages.kv_page_indices->name, "kv_page_indices");
  EXPECT_EQ(pages.kv_last_page_len->name, "kv_last_page_len");
  EXPECT_EQ(attn.output()->name, "out");
  EXPECT_EQ(attn.k_cache_out()->name, "kc");
  EXPECT_EQ(attn.v_cache_out()->name, "vc");
  ASSERT_TRUE(page_table_of(n).has_value());
  EXPECT_EQ(*page_table_of(n), pages);
  // The builder helper lays the operands out in the same order.
  FlashAttentionOp::Operands o{attn.q(),
                               attn.k(),
                               attn.v(),
                               attn.k_cache(),
                               attn.v_cache(),
                               attn.positions(),
                               attn.slot_mapping(),
                               pages};
  EXPECT_EQ(FlashAttentionOp::operands(o), n.inputs);
}

TEST(Ops, RmsNormResidualAndGemm) {
  auto g = parse_attention();
  auto norm = op_view<RmsNormResidualOp>(g->nodes()[1].get());
  ASSERT_TRUE(norm.has_value());
  EXPECT_EQ(norm->x()->name, "x");
  EXPECT_EQ(norm->residual()->name, "residual");
  EXPECT_EQ(norm->weight()->name, "w");
  EXPECT_EQ(norm->normed()->name, "normed");
  EXPECT_EQ(norm->sum()->name, "sum");

  auto gemm = GemmOp::of(g->nodes()[2].get());
  ASSERT_TRUE(gemm.has_value());
  EXPECT_EQ(gemm->epilogue(), GemmOp::Epilogue::kBiasResidual);
  EXPECT_EQ(gemm->x()->name, "normed");
  EXPECT_EQ(gemm->weight()->name, "proj");
  EXPECT_EQ(gemm->bias()->name, "bias");
  EXPECT_EQ(gemm->residual()->name, "sum");
  auto residual_only = GemmOp::of(g->nodes()[3].get());
  ASSERT_TRUE(residual_only.has_value());
  EXPECT_EQ(residual_only->bias(), nullptr);
  EXPECT_EQ(residual_only->residual()->name, "sum");
  EXPECT_EQ(GemmOp::operands(gemm->x(), gemm->weight(), nullptr, gemm->residual()),
            g->nodes()[3]->inputs);
}

TEST(Ops, ViewsRefuseOtherNodes) {
  auto g = parse_attention();
  const Node* attn = g->nodes()[0].get();
  const Node* norm = g->nodes()[1].get();
  EXPECT_FALSE(op_view<RmsNormResidualOp>(attn).has_value());
  EXPECT_FALSE(op_view<FlashAttentionOp>(norm).has_value());
  EXPECT_FALSE(GemmOp::of(norm).has_value());
  EXPECT_FALSE(page_table_of(*norm).has_value());
  EXPECT_FALSE(op_view<RopeOp>(nullptr).has_value());
}

TEST(Ops, ViewsRefuseAWrongOperandCount) {
  // Unverified IR may carry any operand count; a view never indexes past it.
  auto g = parse_graph(R"(graph @g {
  input %x : f32[4]
  %y = rope(%x) {theta = 1, rotary_dim = 2, layout = "half"} : f32[4]
  %z = gemm(%x, %x) {epilogue = "bias"} : f32[4]
  output y = %y
  output z = %z
})");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_FALSE(op_view<RopeOp>((*g)->nodes()[0].get()).has_value());
  EXPECT_FALSE(GemmOp::of((*g)->nodes()[1].get()).has_value());
}

TEST(Ops, GemmEpilogueNames) {
  for (GemmOp::Epilogue e : {GemmOp::Epilogue::kNone, GemmOp::Epilogue::kBias,
                             GemmOp::Epilogue::kResidual, GemmOp::Epilogue::kBiasResidual}) {
    absl::StatusOr<GemmOp::Epilogue> back = GemmOp::parse_epilogue(GemmOp::epilogue_name(e));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, e);
  }
  EXPECT_EQ(GemmOp::parse_epilogue("relu").status().message(),
            "unknown gemm epilogue \"relu\" (none, bias, residual, bias_residual)");
  EXPECT_EQ(GemmOp::num_operands(GemmOp::Epilogue::kNone), 2);
  EXPECT_EQ(GemmOp::num_operands(GemmOp::Epilogue::kBiasResidual), 4);
  EXPECT_EQ(GemmOp::residual_index(GemmOp::Epilogue::kResidual), 2);
  EXPECT_EQ(GemmOp::residual_index(GemmOp::Epilogue::kBiasResidual), 3);
}

}  // namespace
}  // namespace kiln
