// TextOutput: streaming detokenization with stop strings (see text_output.h).
#include "server/text_output.h"

#include <algorithm>

namespace kiln {

TextOutput::TextOutput(const Tokenizer& tokenizer, std::vector<std::string> stop_strings)
    : decoder_(tokenizer, /*skip_special=*/true) {
  for (std::string& s : stop_strings) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

size_t TextOutput::held_back() const {
  size_t keep = 0;
  for (const std::string& stop : stops_) {
    for (size_t n = std::min(stop.size() - 1, text_.size() - streamed_); n > keep; --n) {
      if (text_.compare(text_.size() - n, n, stop, 0, n) == 0) {
        keep = n;
        break;
      }
    }
  }
  return keep;
}

std::string TextOutput::push(int32_t token) {
  if (stopped_) return "";
  text_ += decoder_.push(token);
  size_t cut = std::string::npos;
  for (const std::string& stop : stops_) {
    // A new match can only start in the part not yet shown, or straddle its start.
    const size_t from = streamed_ > stop.size() ? streamed_ - stop.size() : 0;
    const size_t at = text_.find(stop, from);
    if (at != std::string::npos) cut = std::min(cut, at);
  }
  if (cut != std::string::npos) {
    text_.resize(std::max(cut, streamed_));
    stopped_ = true;
    std::string piece = text_.substr(streamed_);
    streamed_ = text_.size();
    return piece;
  }
  const size_t safe = text_.size() - held_back();
  if (safe <= streamed_) return "";
  std::string piece = text_.substr(streamed_, safe - streamed_);
  streamed_ = safe;
  return piece;
}

std::string TextOutput::finish() {
  if (!stopped_) text_ += decoder_.flush();
  std::string piece = text_.substr(std::min(streamed_, text_.size()));
  streamed_ = text_.size();
  return piece;
}

}  // namespace kiln
