// TextStream: one sequence's streaming detokenizer — token ids in, text pieces out that never
// split a UTF-8 character or reveal part of a stop string; cuts the text before a stop string.
// The one implementation both the CLI engine (Engine::generate) and the server (EngineLoop) use.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/tokenizer.h"

namespace kiln {

class TextStream {
 public:
  /// `tokenizer` must outlive the stream. `skip_special`: special tokens (<|im_end|>, ...) add no
  /// text, as an API client expects; the CLI shows them.
  TextStream(const Tokenizer& tokenizer, std::vector<std::string> stop_strings,
             bool skip_special = false)
      : decoder_(tokenizer, skip_special), stops_(std::move(stop_strings)) {}

  /// Adds a generated token. True when the text now holds a stop string: it is cut before it
  /// and the sequence is done (later pushes add nothing and keep answering true).
  bool push(int32_t token);
  /// Ends the stream without a stop string: bytes of an incomplete character come out (as
  /// U+FFFD) and nothing is held back any more.
  void finish();
  /// The text not given out yet that is safe to give out now.
  std::string take();

  /// All text so far (after a cut: up to the stop string).
  const std::string& text() const { return text_; }
  /// True once a stop string cut the text.
  bool stopped() const { return stopped_; }

 private:
  Tokenizer::StreamDecoder decoder_;
  std::vector<std::string> stops_;
  std::string text_;
  size_t streamed_ = 0;  // bytes of text_ already taken
  bool done_ = false;
  bool stopped_ = false;
};

}  // namespace kiln
