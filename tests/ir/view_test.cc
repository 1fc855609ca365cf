// strided_rows: which reshape/slice results are views of their base's bytes, at what offset and
// row stride, and which no strided-rows layout describes.
#include "ir/view.h"

#include <gtest/gtest.h>

#include "ir/parser.h"

namespace kiln {
namespace {

std::unique_ptr<Graph> parse(const std::string& body) {
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(R"(graph @g {
  symbol T <= 16
  input %x : f32[T,8]
  param @w : f32[12,8]
)" + body + "}\n");
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? std::move(*g) : nullptr;
}

const Value* result(const Graph& g, const std::string& name) {
  for (const auto& n : g.nodes()) {
    for (const Value* v : n->outputs) {
      if (v->name == name) return v;
    }
  }
  return nullptr;
}

TEST(StridedRows, ColumnWindowsOfAGemmResultAreStridedRows) {
  auto g = parse(R"(  %y = matmul(%x, @w) : f32[T,12]
  %q = slice(%y) {axis = 1, start = 0, end = 8} : f32[T,8]
  %k = slice(%y) {axis = 1, start = 8, end = 12} : f32[T,4]
  %kh = reshape(%k) {shape = [0, 2, 2]} : f32[T,2,2]
  %h1 = slice(%kh) {axis = 1, start = 1, end = 2} : f32[T,1,2]
  %all = slice(%y) {axis = 1, start = 0, end = 12} : f32[T,12]
  output q = %q
  output h1 = %h1
  output all = %all
)");
  ASSERT_NE(g, nullptr);
  const Value* y = result(*g, "y");
  std::optional<StridedRows> own = strided_rows(*y);
  ASSERT_TRUE(own);
  EXPECT_EQ(own->base, y);
  EXPECT_TRUE(own->contiguous());

  std::optional<StridedRows> k = strided_rows(*result(*g, "k"));
  ASSERT_TRUE(k);
  EXPECT_EQ(k->base, y);
  EXPECT_EQ(k->offset, 8);
  EXPECT_EQ(k->row_stride, 12);
  // A reshape that keeps the rows keeps the layout; a head window of it moves in by one head.
  std::optional<StridedRows> kh = strided_rows(*result(*g, "kh"));
  ASSERT_TRUE(kh);
  EXPECT_EQ(kh->offset, 8);
  EXPECT_EQ(kh->row_stride, 12);
  std::optional<StridedRows> h1 = strided_rows(*result(*g, "h1"));
  ASSERT_TRUE(h1);
  EXPECT_EQ(h1->offset, 10);
  EXPECT_EQ(h1->row_stride, 12);
  // The whole row is contiguous again.
  std::optional<StridedRows> all = strided_rows(*result(*g, "all"));
  ASSERT_TRUE(all);
  EXPECT_TRUE(all->contiguous());
}

TEST(StridedRows, RowRangesMoveTheStartAndInnerWindowsAreNotRows) {
  auto g = parse(R"(  %y = matmul(%x, @w) : f32[T,12]
  %r = reshape(%y) {shape = [0, 3, 4]} : f32[T,3,4]
  %rows = slice(%y) {axis = 0, start = 2, end = 5} : f32[3,12]
  %inner = slice(%r) {axis = 2, start = 0, end = 2} : f32[T,3,2]
  output rows = %rows
  output inner = %inner
)");
  ASSERT_NE(g, nullptr);
  std::optional<StridedRows> rows = strided_rows(*result(*g, "rows"));
  ASSERT_TRUE(rows);
  EXPECT_EQ(rows->offset, 24);
  EXPECT_TRUE(rows->contiguous());
  // Two elements of every head: each token row is three runs, not one.
  EXPECT_FALSE(strided_rows(*result(*g, "inner")));
}

}  // namespace
}  // namespace kiln
