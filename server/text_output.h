// TextOutput: one request's streamed text — tokens decoded without splitting a UTF-8 character,
// stop strings cut (and never partly shown before they are known not to match).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/tokenizer.h"

namespace kiln {

class TextOutput {
 public:
  /// `tokenizer` must outlive the output.
  TextOutput(const Tokenizer& tokenizer, std::vector<std::string> stop_strings);

  /// Adds a token; returns the text that is now safe to show (possibly empty).
  std::string push(int32_t token);
  /// The request ended for another reason: whatever was held back.
  std::string finish();
  /// True once a stop string appeared (the text was cut before it; push() adds nothing more).
  bool stopped() const { return stopped_; }

 private:
  // Bytes at the end of text_ that could still be the start of a stop string.
  size_t held_back() const;

  Tokenizer::StreamDecoder decoder_;
  std::vector<std::string> stops_;
  std::string text_;     // decoded so far, cut at a stop string
  size_t streamed_ = 0;  // bytes of text_ already returned
  bool stopped_ = false;
};

}  // namespace kiln
