// Where a model comes from: an HF directory (config.json + safetensors + tokenizer.json) or one
// GGUF file. Detects which and reads its normalized config.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "models/model_config.h"

namespace kiln {

enum class ModelFormat { kHuggingFaceDir, kGguf };

/// kHuggingFaceDir for a directory with config.json, kGguf for a file starting with "GGUF";
/// otherwise an error saying what was found at `path`.
absl::StatusOr<ModelFormat> detect_model_format(const std::string& path);

/// The normalized config of the model at `path` (either format).
absl::StatusOr<ModelConfig> load_model_config(const std::string& path);

}  // namespace kiln
