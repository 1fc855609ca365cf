// Fuzz-style robustness: thousands of truncated and byte-mutated IR texts never crash the parser
// (the test build runs under AddressSanitizer); every failure carries a line:column prefix.
#include <random>

#include <gtest/gtest.h>

#include "absl/strings/ascii.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "tests/ir/test_util.h"

namespace kiln {
namespace {

bool has_position_prefix(absl::string_view msg) {
  size_t colon = msg.find(':');
  if (colon == 0 || colon == absl::string_view::npos) return false;
  for (size_t i = 0; i < colon; ++i) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(msg[i]))) return false;
  }
  return true;
}

void check_one(const std::string& text, int* parsed) {
  absl::StatusOr<std::unique_ptr<Graph>> g = parse_graph(text);
  if (!g.ok()) {
    EXPECT_TRUE(has_position_prefix(g.status().message())) << g.status().message();
    return;
  }
  ++*parsed;
  // Whatever parses must verify or fail cleanly, and print.
  (void)verify(**g);
  (void)print_graph(**g);
}

TEST(ParserFuzz, TruncationsNeverCrash) {
  std::string text = testing::read_source_file("tests/ir/testdata/all_ops.kir");
  ASSERT_GT(text.size(), 1000u);
  int parsed = 0;
  for (size_t len = 0; len < text.size(); len += 3) check_one(text.substr(0, len), &parsed);
  EXPECT_LT(parsed, 5);  // a truncated graph lacks its closing brace
}

TEST(ParserFuzz, ByteMutationsNeverCrash) {
  std::string text = testing::read_source_file("tests/ir/testdata/all_ops.kir");
  std::mt19937 rng(1234);
  const std::string interesting = "%@{}()[],=:+<\"\\-.0123456789eE \n\t\x7f\xff";
  int parsed = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string m = text;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !m.empty(); ++e) {
      size_t pos = rng() % m.size();
      switch (rng() % 4) {
        case 0: m[pos] = static_cast<char>(rng() % 256); break;
        case 1: m[pos] = interesting[rng() % interesting.size()]; break;
        case 2: m.erase(pos, 1 + rng() % 16); break;
        case 3: m.insert(pos, 1, interesting[rng() % interesting.size()]); break;
      }
    }
    check_one(m, &parsed);
  }
  EXPECT_GT(parsed, 0);  // some mutations (e.g. inside comments) still parse
}

}  // namespace
}  // namespace kiln
