// Hostile IR input: binary bytes are named as such, and errors never echo a huge line in full.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ir/parser.h"
#include "ir/verifier.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string error_of(const std::string& text) {
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(text);
  EXPECT_FALSE(g.ok()) << "parsed unexpectedly";
  return g.ok() ? "" : std::string(g.status().message());
}

TEST(HostileIr, BinaryInputIsNamedAsNotIrText) {
  // A plan file's magic as a .kir: the first byte that cannot start a token is reported.
  EXPECT_EQ(error_of(std::string("KPLAN\x01\x00\x00\x00", 9)),
            "1:6: not IR text (binary byte 0x01 at 1:6)");
  EXPECT_EQ(error_of("graph @g {\n  \xff\xfe"), "2:3: not IR text (binary byte 0xff at 2:3)");
  EXPECT_EQ(error_of(std::string("\0GGUF", 5)), "1:1: not IR text (binary byte 0x00 at 1:1)");
  // A printable stray character is still reported as one, without a doubled "expected".
  EXPECT_EQ(error_of("graph @g { $"), "1:12: unexpected character '$'");
}

TEST(HostileIr, VerifierErrorsClipAHugeEchoedLine) {
  // A node with a 10 MB attribute and a wrong declared type: the message shows the start of the
  // line and how much was cut, not 10 MB.
  const std::string big(10 << 20, 'a');
  const std::string text =
      "graph @g {\n  symbol T <= 8\n  input %x : f32[T,4]\n  %y = neg(%x) {note = \"" + big +
      "\"} : f32[T,5]\n  output y = %y\n}";
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(text);
  ASSERT_TRUE(g.ok()) << g.status().message().substr(0, 300);
  absl::Status s = verify(**g);
  ASSERT_FALSE(s.ok());
  EXPECT_LT(s.message().size(), 1000u);
  EXPECT_THAT(std::string(s.message()), HasSubstr("%y = neg(%x) {note = \"aaa"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("more bytes)"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("declared f32[T,5]"));
  EXPECT_THAT(std::string(s.message()), Not(HasSubstr(std::string(1000, 'a'))));
}

}  // namespace
}  // namespace kiln
