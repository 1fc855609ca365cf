// Stop ids and stop strings.
#include "runtime/engine/stop_criteria.h"

#include <algorithm>

namespace kiln {

std::vector<int32_t> resolve_stop_ids(const std::vector<int32_t>& requested,
                                      const ModelConfig& config, const Tokenizer& tokenizer) {
  if (!requested.empty()) return requested;
  std::vector<int32_t> ids = config.eos_ids;
  for (int32_t t : tokenizer.stop_ids()) ids.push_back(t);
  return ids;
}

size_t find_stop_string(const std::string& text, size_t already_checked,
                        const std::vector<std::string>& stops) {
  size_t cut = std::string::npos;
  for (const std::string& stop : stops) {
    if (stop.empty()) continue;
    size_t at = text.find(stop, already_checked > stop.size() ? already_checked - stop.size() : 0);
    if (at != std::string::npos) cut = std::min(cut, at);
  }
  return cut;
}

size_t stop_prefix_held_back(const std::string& text, const std::vector<std::string>& stops) {
  size_t keep = 0;
  for (const std::string& stop : stops) {
    if (stop.empty()) continue;
    for (size_t n = std::min(stop.size() - 1, text.size()); n > keep; --n) {
      if (text.compare(text.size() - n, n, stop, 0, n) == 0) {
        keep = n;
        break;
      }
    }
  }
  return keep;
}

}  // namespace kiln
