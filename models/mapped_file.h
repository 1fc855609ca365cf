// How the loaders get at a file's bytes: a read-only memory map (weights, without copying them)
// or a bounded read (small JSON files). Both refuse what is not a regular file (a FIFO or
// /dev/zero would otherwise block or be read forever).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kiln {

class MappedFile {
 public:
  /// Maps `path` read-only. An empty file maps to an empty span; a path that is not a regular
  /// file is an error (opened without blocking, so a FIFO cannot hang the caller).
  static absl::StatusOr<std::unique_ptr<MappedFile>> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

/// The whole of the regular file at `path`, refusing anything larger than `max_bytes` before
/// reading it ("x/config.json: 3000000000 bytes is more than the 16777216 bytes such a file may
/// have").
absl::StatusOr<std::string> read_small_file(const std::string& path, uint64_t max_bytes);

}  // namespace kiln
