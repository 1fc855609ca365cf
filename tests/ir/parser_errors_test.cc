// Each class of parse error reports line:column and what was expected.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ir/parser.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string error_of(const std::string& text) {
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(text);
  EXPECT_FALSE(g.ok()) << "parsed unexpectedly:\n" << text;
  return g.ok() ? "" : std::string(g.status().message());
}

const char* kHead = "graph @g {\n  symbol T <= 8\n  input %x : f32[T,4]\n";

TEST(ParserErrors, MissingGraphKeyword) {
  EXPECT_EQ(error_of("grph @g {}"), "1:1: expected 'graph', got 'grph'");
}

TEST(ParserErrors, UnexpectedCharacter) {
  EXPECT_THAT(error_of(std::string(kHead) + "  %y = neg(%x) : f32[T,4] $\n}"),
              StartsWith("4:27: unexpected character '$'"));
}

TEST(ParserErrors, UnknownOp) {
  EXPECT_EQ(error_of(std::string(kHead) + "  %y = frobnicate(%x) : f32[T,4]\n}"),
            "4:8: unknown op 'frobnicate'");
}

TEST(ParserErrors, UndefinedValue) {
  EXPECT_EQ(error_of(std::string(kHead) + "  %y = neg(%z) : f32[T,4]\n}"),
            "4:12: use of undefined value %z");
}

TEST(ParserErrors, UndeclaredParam) {
  EXPECT_EQ(error_of(std::string(kHead) + "  %y = matmul(%x, @w) : f32[T,4]\n}"),
            "4:19: use of undeclared parameter @w");
}

TEST(ParserErrors, Redefinition) {
  EXPECT_EQ(error_of(std::string(kHead) + "  %x = neg(%x) : f32[T,4]\n}"),
            "4:3: %x is defined twice");
}

TEST(ParserErrors, UnknownSymbol) {
  EXPECT_THAT(error_of(std::string(kHead) + "  %y = neg(%x) : f32[Q,4]\n}"),
              StartsWith("4:22: unknown symbol 'Q'"));
}

TEST(ParserErrors, UnknownDtype) {
  EXPECT_THAT(error_of(std::string(kHead) + "  %y = neg(%x) : f64[T,4]\n}"),
              StartsWith("4:18: expected a dtype"));
}

TEST(ParserErrors, BadAttributeValue) {
  EXPECT_THAT(error_of(std::string(kHead) + "  %y = neg(%x) {a = %x} : f32[T,4]\n}"),
              StartsWith("4:21: expected an attribute value"));
}

TEST(ParserErrors, DuplicateAttribute) {
  EXPECT_EQ(error_of(std::string(kHead) + "  %y = neg(%x) {a = 1, a = 2} : f32[T,4]\n}"),
            "4:24: attribute 'a' is given twice");
}

TEST(ParserErrors, ResultCountMismatch) {
  EXPECT_THAT(error_of(std::string(kHead) + "  %y, %z = neg(%x) : f32[T,4]\n}"),
              HasSubstr("neg declares 2 results but 1 types"));
  EXPECT_THAT(error_of(std::string(kHead) + "  %y, %z = neg(%x) : f32[T,4], f32[T,4]\n}"),
              StartsWith("4:3: neg has 1 result(s), got 2"));
}

TEST(ParserErrors, IntegerOutOfRange) {
  EXPECT_EQ(error_of("graph @g {\n  symbol T <= 99999999999999999999999\n}"),
            "2:15: integer out of range");
}

TEST(ParserErrors, UnterminatedString) {
  EXPECT_THAT(error_of(std::string(kHead) + "  %y = neg(%x) {a = \"abc\n}"),
              StartsWith("4:21: expected a closing '\"'"));
}

TEST(ParserErrors, MissingClosingBrace) {
  EXPECT_EQ(
      error_of(std::string(kHead)),
      "4:1: expected 'symbol', 'input', 'param', 'output' or a result like %0, got end of input");
}

TEST(ParserErrors, TrailingText) {
  EXPECT_EQ(error_of("graph @g {\n  output y = %x\n}"), "2:14: use of undefined value %x");
  EXPECT_EQ(error_of(std::string(kHead) + "  output y = %x\n} extra"),
            "5:3: expected end of input after '}', got 'extra'");
}

TEST(ParserErrors, BadSymbolBound) {
  EXPECT_THAT(error_of("graph @g {\n  symbol T <= 0\n}"),
              HasSubstr("2:10: symbol T needs a positive upper bound"));
}

TEST(ParserErrors, NegativeDim) {
  EXPECT_EQ(error_of(std::string(kHead) + "  %y = neg(%x) : f32[-4]\n}"),
            "4:22: dims must not be negative");
}

TEST(ParserErrors, ParamPartsAndShards) {
  const std::string head = "graph @g {\n  symbol T <= 8\n";
  EXPECT_THAT(error_of(head + "  param @w : f32[4,4] = slab(\"a\"[0:4])\n}"),
              HasSubstr("expected rows(...), cols(...) or shards(...), got 'slab'"));
  EXPECT_THAT(error_of(head + "  param @w : f32[4,4] = cols(\"a\"[4:4])\n}"),
              HasSubstr("expected a cols range [begin:end] with 0 <= begin < end"));
  EXPECT_THAT(
      error_of(head + "  param @w : f32[4,4] = shards(rows(\"a\"[0:4]) rows(\"a\"[4:8]))\n}"),
      HasSubstr("expected ')'"));
  EXPECT_THAT(error_of(head + "  param @w : f32[4,4] = shards()\n}"),
              HasSubstr("expected rows(...), cols(...) or shards(...), got ')'"));
  EXPECT_THAT(error_of("graph @g {\n  ranks 0\n}"), HasSubstr("ranks must be in [1, 1024], got 0"));
  EXPECT_THAT(error_of("graph @g {\n  ranks 2000\n}"), HasSubstr("ranks must be in [1, 1024]"));
  EXPECT_THAT(error_of("graph @g {\n  ranks 2\n  ranks 2\n}"),
              HasSubstr("ranks is declared twice"));
  std::string many = head + "  param @w : f32[1,4] = shards(";
  for (int i = 0; i < 1025; ++i) many += std::string(i ? ", " : "") + "rows(\"a\"[0:1])";
  EXPECT_THAT(error_of(many + ")\n}"), HasSubstr("more than 1024 shards"));
}

}  // namespace
}  // namespace kiln
