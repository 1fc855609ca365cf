// TextStream and stop criteria: pieces never reveal the start of a stop string, the text is cut
// right before one, the pieces are a prefix of the text at every point and add up to it, special
// tokens are skipped when asked (the server) and shown otherwise (the CLI), and stop ids default
// to the model's EOS plus the tokenizer's stop tokens.
#include "runtime/engine/text_stream.h"

#include <gtest/gtest.h>

#include "models/tokenizer_source.h"
#include "runtime/engine/stop_criteria.h"
#include "tests/fixtures.h"

namespace kiln {
namespace {

TEST(StopCriteria, HeldBackIsTheLongestStopPrefixAtTheEnd) {
  EXPECT_EQ(stop_prefix_held_back("hello wor", {"world", "or"}), 3u);  // "wor" may become "world"
  EXPECT_EQ(stop_prefix_held_back("hello", {"xyz"}), 0u);
  EXPECT_EQ(stop_prefix_held_back("ab", {"", "b!"}), 1u);
  EXPECT_EQ(find_stop_string("say STOP now", 0, {"STOP", "now"}), 4u);
  EXPECT_EQ(find_stop_string("say STOP now", 0, {"nope"}), std::string::npos);
}

TEST(StopCriteria, StopIdsDefaultToEosAndTheTokenizersStops) {
  auto tok = load_tokenizer(testing::fixture("tiny"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  ModelConfig c;
  c.eos_ids = {2};
  std::vector<int32_t> ids = resolve_stop_ids({}, c, *tok);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 2);
  for (int32_t t : tok->stop_ids()) EXPECT_NE(std::find(ids.begin(), ids.end(), t), ids.end());
  EXPECT_EQ(resolve_stop_ids({7}, c, *tok), std::vector<int32_t>{7});
}

TEST(TextStream, PiecesNeverRevealAStopStringAndTheTextIsCutBeforeIt) {
  auto tok = load_tokenizer(testing::fixture("tiny"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string text = "one two three four five";
  const std::vector<int32_t> ids = tok->encode(text, /*parse_special=*/false);
  ASSERT_GT(ids.size(), 3u);
  // Without stops: the pieces are the whole text.
  TextStream plain(*tok, {});
  std::string out;
  for (int32_t id : ids) {
    EXPECT_FALSE(plain.push(id));
    out += plain.take();
  }
  plain.finish();
  out += plain.take();
  EXPECT_EQ(out, tok->decode(ids));

  TextStream cut(*tok, {"three"});
  out.clear();
  bool stopped = false;
  for (int32_t id : ids) {
    stopped = cut.push(id);
    const std::string piece = cut.take();
    EXPECT_EQ((out + piece).find("thr"), std::string::npos) << "a stop prefix leaked: " << piece;
    out += piece;
    if (stopped) break;
  }
  ASSERT_TRUE(stopped);
  cut.finish();
  out += cut.take();
  EXPECT_EQ(out, tok->decode(ids).substr(0, tok->decode(ids).find("three")));
  EXPECT_EQ(cut.text(), out);
}

TEST(TextStream, PiecesArePrefixesOfTheTextAndStopAfterTheCut) {
  auto tok = load_tokenizer(testing::fixture("tiny"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::vector<int32_t> ids = tok->encode("hello world, the quick brown fox", false, false);
  const std::string full = tok->decode(ids);
  const size_t at = full.find("quick");
  ASSERT_NE(at, std::string::npos);
  TextStream cut(*tok, {"", "quick", "zzz"}, /*skip_special=*/true);  // an empty stop is ignored
  std::string shown;
  for (int32_t id : ids) {
    const bool stopped = cut.push(id);
    shown += cut.take();
    EXPECT_EQ(shown, full.substr(0, shown.size()));  // a prefix of the text at every point
    EXPECT_LE(shown.size(), at);                     // never a byte of the stop string
    EXPECT_EQ(stopped, cut.stopped());
  }
  EXPECT_TRUE(cut.stopped());
  EXPECT_TRUE(cut.push(ids[0]));  // after the cut nothing more comes out
  cut.finish();
  shown += cut.take();
  EXPECT_EQ(shown, full.substr(0, at));
}

TEST(TextStream, SpecialTokensAreSkippedOnlyWhenAsked) {
  auto tok = load_tokenizer(testing::fixture("tiny"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::vector<int32_t> ids = tok->encode("hello world", false, false);
  const std::string plain = tok->decode(ids);
  ids.push_back(2);  // <|im_end|>
  auto run = [&](bool skip) {
    TextStream s(*tok, {}, skip);
    for (int32_t id : ids) EXPECT_FALSE(s.push(id));
    s.finish();
    EXPECT_FALSE(s.stopped());
    return s.take();
  };
  EXPECT_EQ(run(true), plain);
  EXPECT_EQ(run(false), plain + "<|im_end|>");
}

}  // namespace
}  // namespace kiln
