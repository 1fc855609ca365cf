// TextStream: UTF-8-safe, stop-string-aware streaming of generated text.
#include "runtime/engine/text_stream.h"

#include <algorithm>

#include "runtime/engine/stop_criteria.h"

namespace kiln {

bool TextStream::push(int32_t token) {
  if (stopped_) return true;
  if (done_) return false;  // finished: the text is final
  text_ += decoder_.push(token);
  const size_t cut = find_stop_string(text_, streamed_, stops_);
  if (cut == std::string::npos) return false;
  // Never before what was already given out (a stop string cannot straddle it: its start would
  // have been held back), so the pieces always add up to text().
  text_.resize(std::max(cut, streamed_));
  done_ = stopped_ = true;
  return true;
}

void TextStream::finish() {
  if (!done_) text_ += decoder_.flush();
  done_ = true;
}

std::string TextStream::take() {
  const size_t safe = done_ ? text_.size() : text_.size() - stop_prefix_held_back(text_, stops_);
  if (safe <= streamed_) return "";
  std::string piece = text_.substr(streamed_, safe - streamed_);
  streamed_ = safe;
  return piece;
}

}  // namespace kiln
