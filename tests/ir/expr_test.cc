// Tests of the fused_elementwise expression language: round trip, evaluation, parse errors.
#include "ir/expr.h"

#include <cmath>

#include "gtest/gtest.h"

namespace kiln {
namespace {

TEST(ExprTest, CanonicalRoundTrip) {
  for (const char* text : {"mul(silu($0), $1)", "add($0, 1.5)", "div(neg($2), rsqrt(exp($1)))",
                           "$0", "-0.25", "sub(1e-05, $0)"}) {
    absl::StatusOr<Expr> e = Expr::parse(text);
    ASSERT_TRUE(e.ok()) << text << ": " << e.status();
    EXPECT_EQ(e->to_string(), text);
    absl::StatusOr<Expr> again = Expr::parse(e->to_string());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->to_string(), e->to_string());
  }
  absl::StatusOr<Expr> spaced = Expr::parse("  mul ( silu( $0 ) ,$1 )  ");
  ASSERT_TRUE(spaced.ok()) << spaced.status();
  EXPECT_EQ(spaced->to_string(), "mul(silu($0), $1)");
  EXPECT_EQ(spaced->max_input_index(), 1);
  EXPECT_EQ(Expr::parse("2.0")->max_input_index(), -1);
}

TEST(ExprTest, Evaluates) {
  absl::StatusOr<Expr> e = Expr::parse("add(mul(silu($0), $1), div(exp($2), rsqrt(4)))");
  ASSERT_TRUE(e.ok());
  const float in[3] = {0.7f, -1.3f, 0.2f};
  std::vector<float> scratch(e->nodes().size());
  const float silu = 0.7f / (1 + std::exp(-0.7f));
  EXPECT_NEAR(e->eval(in, scratch.data()), silu * -1.3f + std::exp(0.2f) * 2.0f, 1e-6);
  EXPECT_FLOAT_EQ(Expr::parse("sub(neg($0), 3)")->eval(in, scratch.data()), -3.7f);
}

void expect_error(const char* text, const char* substring) {
  absl::StatusOr<Expr> e = Expr::parse(text);
  ASSERT_FALSE(e.ok()) << text;
  EXPECT_NE(e.status().message().find(substring), std::string::npos)
      << text << " -> " << e.status().message();
}

TEST(ExprTest, ParseErrorsNamePosition) {
  expect_error("", "expr:1: expected an expression, got end of input");
  expect_error("foo($0)", "expr:1: expected a function");
  expect_error("mul($0)", "expr:7: expected ',' (mul takes 2 arguments)");
  expect_error("neg($0, $1)", "expr:7: expected ')' (neg takes 1 argument)");
  expect_error("silu($x)", "expr:7: expected an input index after '$'");
  expect_error("add($0, $1) $2", "expr:13: expected end of expression");
  expect_error("exp", "expr:4: expected '('");
  expect_error("add(1.2.3, $0)", "expected a number");
  std::string deep;
  for (int i = 0; i < 300; ++i) deep += "neg(";
  expect_error(deep.c_str(), "nesting limit");
}

TEST(ExprTest, ValidateChecksInputCount) {
  EXPECT_TRUE(validate_expr("mul($0, $1)", 2).ok());
  absl::Status s = validate_expr("mul($0, $2)", 2);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("uses $2 but the op has 2 inputs"), std::string::npos) << s;
  EXPECT_FALSE(validate_expr("mul(", 2).ok());
}

}  // namespace
}  // namespace kiln
