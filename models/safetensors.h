// safetensors reader (single file and sharded index) over mmapped files, fully validated.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ir/dtype.h"
#include "models/mapped_file.h"

namespace kiln {

struct SafetensorsTensorInfo {
  std::string name;
  DType dtype;                 // F32, F16 or BF16
  std::vector<int64_t> shape;  // row-major, as stored
  uint64_t offset = 0;         // absolute offset in the file (8 + header length + begin)
  uint64_t size = 0;           // bytes
};

class SafetensorsFile {
 public:
  /// Maps and validates `path`: the 8-byte header length, the JSON header, every tensor's dtype,
  /// shape and data_offsets (begin <= end <= data size, end - begin == elements * dtype size),
  /// duplicate names. `__metadata__` is ignored. Errors name the file and the tensor.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> open(const std::string& path);

  /// Tensors in header order (nlohmann keeps JSON objects sorted by name).
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }
  const SafetensorsTensorInfo* find_tensor(const std::string& name) const;
  /// The tensor's raw bytes (already checked to lie inside the file).
  absl::Span<const uint8_t> tensor_bytes(const SafetensorsTensorInfo& info) const;
  const std::string& path() const { return path_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::unique_ptr<MappedFile> file_;
  std::vector<SafetensorsTensorInfo> tensors_;
  std::map<std::string, size_t> by_name_;
};

/// Reads `model.safetensors.index.json`: its `weight_map` (tensor name -> shard file name,
/// relative to the index's folder). Shard names must be plain file names (no '/' or "..").
absl::StatusOr<std::map<std::string, std::string>> read_safetensors_index(
    const std::string& index_path);

}  // namespace kiln
