// Model format detection and config loading.
#include "models/model_source.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "models/gguf.h"

namespace kiln {

absl::StatusOr<ModelFormat> detect_model_format(const std::string& path) {
  std::error_code ec;
  std::filesystem::file_status st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file or directory"));
  }
  if (std::filesystem::is_directory(st)) {
    if (!std::filesystem::exists(std::filesystem::path(path) / "config.json")) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": a model directory needs config.json (HF layout) beside its safetensors"));
    }
    return ModelFormat::kHuggingFaceDir;
  }
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  if (!in.read(magic, 4)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot read (empty or unreadable file)"));
  }
  if (std::string(magic, 4) == "GGUF") return ModelFormat::kGguf;
  return absl::InvalidArgumentError(absl::StrCat(
      path, ": not a model: expected a GGUF file or an HF directory with config.json"));
}

absl::StatusOr<ModelConfig> load_model_config(const std::string& path) {
  absl::StatusOr<ModelFormat> format = detect_model_format(path);
  if (!format.ok()) return format.status();
  if (*format == ModelFormat::kGguf) {
    absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::open(path);
    if (!gguf.ok()) return gguf.status();
    return model_config_from_gguf(**gguf);
  }
  std::string config_path = (std::filesystem::path(path) / "config.json").string();
  std::ifstream in(config_path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(config_path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<ModelConfig> config = model_config_from_hf_json(text.str());
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(config_path, ": ", config.status().message()));
  }
  return config;
}

}  // namespace kiln
