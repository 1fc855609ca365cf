// Loading a tokenizer from where a plan says it lives: a tokenizer.json, an HF model directory
// (its tokenizer.json) or a .gguf file (its tokenizer.ggml.* metadata).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "models/tokenizer.h"

namespace kiln {

/// Errors name the path and what was found there.
absl::StatusOr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace kiln
