// Stop criteria of one request: the token ids that end it, and where a stop string cuts its text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/model_config.h"
#include "models/tokenizer.h"

namespace kiln {

/// `requested` when not empty; otherwise the model's EOS ids plus the tokenizer's stop ids
/// (end-of-turn tokens). Resolved once per sequence, not per sampled token.
std::vector<int32_t> resolve_stop_ids(const std::vector<int32_t>& requested,
                                      const ModelConfig& config, const Tokenizer& tokenizer);

/// The earliest position in `text` where one of `stops` begins, searching only where a match
/// could involve bytes added after the first `already_checked` bytes; npos when none.
size_t find_stop_string(const std::string& text, size_t already_checked,
                        const std::vector<std::string>& stops);

/// Length of the longest suffix of `text` that is a proper prefix of some stop string: that much
/// must be held back from the stream until the next token shows whether a stop string completes.
size_t stop_prefix_held_back(const std::string& text, const std::vector<std::string>& stops);

}  // namespace kiln
