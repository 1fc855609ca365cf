// The plan file (.kplan): `"KPLAN" | u32 version | u64 manifest length | JSON manifest | blobs`.
// The blob region starts at the first 256-byte boundary after the manifest with 8 bytes holding
// xxh3(manifest), so a flipped manifest byte is caught even where the JSON still parses; blob
// offsets in the manifest are relative to that region and 256-byte aligned (cubins, PTX, sources,
// optionally packed weights). Integers are little-endian.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kiln {

inline constexpr char kPlanMagic[5] = {'K', 'P', 'L', 'A', 'N'};
inline constexpr uint32_t kPlanFormatVersion = 1;
inline constexpr uint64_t kPlanAlignment = 256;

/// Collects blobs, then writes manifest + blobs. The manifest gets a "blobs" array
/// ({name, offset, size, xxh3}) that the writer fills in.
class PlanWriter {
 public:
  /// Adds a blob and returns its index in manifest["blobs"].
  int add_blob(std::string name, std::string bytes);
  /// Serializes the plan to bytes (manifest["blobs"] is overwritten).
  std::string serialize(nlohmann::json manifest) const;
  /// serialize() written to `path` through a temporary file + rename.
  absl::Status write(const std::string& path, nlohmann::json manifest) const;

 private:
  std::vector<std::pair<std::string, std::string>> blobs_;
};

/// How much of the referenced weight files to check when loading. Sizes are always checked
/// (cheap); checksums cost a full read of every weight byte (~1 s per 10 GB from page cache), so
/// they are checked on request: `kiln inspect --verify` or the runtime's first load of a plan.
enum class WeightCheck { kNone, kSize, kChecksum };

struct PlanLoadOptions {
  std::optional<std::string> device_arch;  // e.g. "sm_80": must match the plan's arch
  std::optional<int> nvrtc_major;          // must match the plan's NVRTC major when set
  WeightCheck weights = WeightCheck::kSize;
  std::string plan_path_for_messages = "model.kplan";
};

/// A loaded, validated plan. Blob views point into `bytes`.
struct LoadedPlan {
  std::string bytes;
  nlohmann::json manifest;
  uint64_t blob_base = 0;

  /// The bytes of blob `index` (validated at load).
  std::string_view blob(int index) const;
  /// Index of the blob named `name`, or -1.
  int find_blob(std::string_view name) const;
};

/// Validates `bytes` as a plan: magic, version, manifest length and checksum, manifest fields,
/// every blob's offset/size against the file and each blob's xxh3, arch / NVRTC against
/// `options`, and the referenced weight files. Each error says what is wrong and how to fix it.
absl::StatusOr<LoadedPlan> parse_plan(std::string bytes, const PlanLoadOptions& options);
/// parse_plan of the file at `path`.
absl::StatusOr<LoadedPlan> read_plan(const std::string& path, PlanLoadOptions options = {});

/// xxh3 of [offset, offset + size) of a file, read in chunks (for weight references).
absl::StatusOr<uint64_t> hash_file_range(const std::string& path, uint64_t offset, uint64_t size);

}  // namespace kiln
