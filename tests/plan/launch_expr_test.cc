// Launch-rule expressions: grammar, errors, int64 overflow, and whole rules.
#include "plan/launch_expr.h"

#include <gtest/gtest.h>

#include <limits>

namespace kiln {
namespace {

TEST(LaunchExpr, Grammar) {
  EXPECT_EQ(*eval_launch_expr("cdiv(T*3, 64) + S", {{"T", 100}, {"S", 2}}), 7);
  EXPECT_EQ(*eval_launch_expr("min(T, 5) * (S+1) - 1", {{"T", 9}, {"S", 2}}), 14);
  EXPECT_EQ(*eval_launch_expr("max(1, min(cdiv(K, 256), 32))", {{"K", 0}}), 1);
  EXPECT_EQ(*eval_launch_expr("cdiv(0 - 5, 2)", {}), -2);  // ceiling, toward +inf
  EXPECT_EQ(*eval_launch_expr("cdiv(5, 2)", {}), 3);
  EXPECT_FALSE(eval_launch_expr("T +", {{"T", 1}}).ok());
  EXPECT_FALSE(eval_launch_expr("", {}).ok());
  EXPECT_FALSE(eval_launch_expr("min(1 2)", {}).ok());
  absl::StatusOr<int64_t> unbound = eval_launch_expr("Q", {{"T", 1}});
  ASSERT_FALSE(unbound.ok());
  EXPECT_NE(unbound.status().message().find("unbound symbol Q"), std::string::npos);
  EXPECT_FALSE(eval_launch_expr("cdiv(1, 0)", {}).ok());
}

TEST(LaunchExpr, OverflowIsAnError) {
  const int64_t big = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(*eval_launch_expr("B", {{"B", big}}), big);
  EXPECT_FALSE(eval_launch_expr("B + 1", {{"B", big}}).ok());
  EXPECT_FALSE(eval_launch_expr("B * 2", {{"B", big / 2 + 1}}).ok());
  EXPECT_FALSE(eval_launch_expr("0 - B - 2", {{"B", big}}).ok());
  EXPECT_FALSE(eval_launch_expr("99999999999999999999", {}).ok());
  EXPECT_EQ(*eval_launch_expr("cdiv(B, 2)", {{"B", big}}), big / 2 + 1);
}

TEST(LaunchExpr, Rule) {
  LaunchRule r;
  r.grid = {"cdiv(T, 64)", "S", "1"};
  r.block = {"128", "1", "1"};
  r.dynamic_shared_bytes = "S*16";
  absl::StatusOr<LaunchGeometry> d = eval_launch_rule(r, {{"T", 100}, {"S", 3}});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->grid, (std::array<int64_t, 3>{2, 3, 1}));
  EXPECT_EQ(d->block, (std::array<int64_t, 3>{128, 1, 1}));
  EXPECT_EQ(d->dynamic_shared_bytes, 48);
  absl::StatusOr<LaunchGeometry> empty = eval_launch_rule(r, {{"T", 100}, {"S", 0}});
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("grid[1]"), std::string::npos);
}

}  // namespace
}  // namespace kiln
