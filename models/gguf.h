// GGUF v2/v3 reader: validated metadata and tensor directory over an mmapped file.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ir/dtype.h"
#include "models/mapped_file.h"

namespace kiln {

/// One GGUF metadata value. Integers of every width are widened to int64/uint64, floats to
/// double; arrays keep their element kind.
struct GgufValue {
  using Array = std::vector<GgufValue>;
  std::variant<int64_t, uint64_t, double, bool, std::string, Array> value;
  /// GGUF's type code of the value as stored (GGUF_TYPE_UINT32 = 4, ...); for arrays, 9.
  uint32_t stored_type = 0;
};

struct GgufTensorInfo {
  std::string name;
  DType dtype;                 // F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q4_K/Q6_K
  std::vector<int64_t> shape;  // row-major, outermost first (GGUF's ne[] reversed)
  uint64_t offset = 0;         // absolute offset in the file
  uint64_t size = 0;           // bytes
};

class GgufFile {
 public:
  /// Opens and validates the whole header: magic, version, every metadata entry, every tensor's
  /// type, shape, offset and size against the file. Errors name the file and the field.
  static absl::StatusOr<std::unique_ptr<GgufFile>> open(const std::string& path);

  uint32_t version() const;
  const std::map<std::string, GgufValue>& metadata() const;
  const std::vector<GgufTensorInfo>& tensors() const;
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  /// The tensor's raw bytes (already checked to lie inside the file).
  absl::Span<const uint8_t> tensor_bytes(const GgufTensorInfo& info) const;

  // Typed metadata lookups; NotFound / InvalidArgument ("gguf: key X is a string, expected an
  // integer") on a missing key or wrong type.
  absl::StatusOr<int64_t> get_int(const std::string& key) const;
  absl::StatusOr<double> get_float(const std::string& key) const;  // accepts integers too
  absl::StatusOr<std::string> get_string(const std::string& key) const;
  absl::StatusOr<bool> get_bool(const std::string& key) const;
  absl::StatusOr<std::vector<std::string>> get_string_array(const std::string& key) const;
  absl::StatusOr<std::vector<double>> get_float_array(const std::string& key) const;
  absl::StatusOr<std::vector<int64_t>> get_int_array(const std::string& key) const;
  bool has(const std::string& key) const;

  const std::string& path() const;

 private:
  GgufFile() = default;
  std::string path_;
  uint32_t version_ = 0;
  std::unique_ptr<MappedFile> file_;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
};

}  // namespace kiln
