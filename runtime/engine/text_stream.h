// TextStream: one sequence's streaming detokenizer — token ids in, text pieces out that never
// split a UTF-8 character or reveal part of a stop string; cuts the text before a stop string.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/tokenizer.h"

namespace kiln {

class TextStream {
 public:
  TextStream(const Tokenizer& tokenizer, std::vector<std::string> stop_strings)
      : decoder_(tokenizer, /*skip_special=*/false), stops_(std::move(stop_strings)) {}

  /// Adds a generated token. True when the text now holds a stop string: it is cut before it
  /// and the sequence is done.
  bool push(int32_t token);
  /// Ends the stream without a stop string: bytes of an incomplete character come out (as
  /// U+FFFD) and nothing is held back any more.
  void finish();
  /// The text not given out yet that is safe to give out now.
  std::string take();

  /// All text so far (after a cut: up to the stop string).
  const std::string& text() const { return text_; }

 private:
  Tokenizer::StreamDecoder decoder_;
  std::vector<std::string> stops_;
  std::string text_;
  size_t streamed_ = 0;  // bytes of text_ already taken
  bool done_ = false;
};

}  // namespace kiln
