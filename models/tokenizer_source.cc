// load_tokenizer: tokenizer.json, HF directory or GGUF.
#include "models/tokenizer_source.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "models/gguf.h"

namespace kiln {

absl::StatusOr<Tokenizer> load_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec))
    return Tokenizer::from_tokenizer_json((fs::path(path) / "tokenizer.json").string());
  if (absl::EndsWith(path, ".json")) return Tokenizer::from_tokenizer_json(path);
  if (!fs::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat("tokenizer source ", path, " does not exist"));
  }
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::open(path);
  if (!gguf.ok()) return gguf.status();
  return Tokenizer::from_gguf(**gguf);
}

}  // namespace kiln
