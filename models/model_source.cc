// Model format detection and config loading.
#include "models/model_source.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "models/gguf.h"
#include "models/mapped_file.h"
#include "models/safetensors.h"

namespace kiln {
namespace {

// A config.json is a few kilobytes; anything near this is not one (and /dev/zero is refused
// before this as not a regular file).
constexpr uint64_t kMaxConfigBytes = 16ull << 20;

}  // namespace

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
  if (!std::filesystem::is_regular_file(st)) {  // a FIFO would block the read below forever
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a regular file: expected a GGUF file or an HF directory with config.json"));
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
  const std::filesystem::path dir(path);
  const std::string config_path = (dir / "config.json").string();
  absl::StatusOr<std::string> text = read_small_file(config_path, kMaxConfigBytes);
  if (!text.ok()) return text.status();
  absl::StatusOr<ModelConfig> config = model_config_from_hf_json(*text, config_path);
  if (!config.ok()) return config.status();

  // num_hidden_layers against the checkpoint's tensor names (headers only: the index, or the
  // safetensors header, which SafetensorsFile validates without touching tensor data).
  std::vector<std::string> names;
  std::string checkpoint = (dir / "model.safetensors.index.json").string();
  std::error_code ec;
  if (std::filesystem::exists(checkpoint, ec)) {
    absl::StatusOr<std::map<std::string, std::string>> index = read_safetensors_index(checkpoint);
    if (!index.ok()) return index.status();
    for (const auto& [name, shard] : *index) names.push_back(name);
  } else {
    checkpoint = (dir / "model.safetensors").string();
    if (!std::filesystem::exists(checkpoint, ec)) {
      return absl::NotFoundError(absl::StrCat(
          path, ": no model.safetensors or model.safetensors.index.json beside config.json"));
    }
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::open(checkpoint);
    if (!file.ok()) return file.status();
    for (const SafetensorsTensorInfo& t : (*file)->tensors()) names.push_back(t.name);
  }
  const std::vector<std::string_view> views(names.begin(), names.end());
  if (absl::Status s = check_layer_count(config->num_layers, WeightNaming::kHuggingFace, views);
      !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": num_hidden_layers ", s.message(), " (", checkpoint, ")"));
  }
  return config;
}

}  // namespace kiln
