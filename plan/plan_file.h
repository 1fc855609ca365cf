// The plan file (.kplan): `"KPLAN" | u32 version | u64 manifest length | JSON manifest | blobs`.
// The blob region starts at the first 256-byte boundary after the manifest with 8 bytes holding
// xxh3(manifest), so a flipped manifest byte is caught even where the JSON still parses; blob
// offsets in the manifest are relative to that region and 256-byte aligned (cubins, PTX, sources,
// optionally packed weights). Integers are little-endian. The manifest is plan/plan_json.h's
// JSON form of a typed Plan; loading validates everything and says how to rebuild a bad plan.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "plan/plan.h"
#include "plan/plan_json.h"

namespace kiln {

inline constexpr char kPlanMagic[5] = {'K', 'P', 'L', 'A', 'N'};
// 3: the decode attention merges in its own launch (no flash_attention_merge; zeroed workspaces),
// the persistent decode kernel, and tensor parallelism (ranks, collectives, per-rank weights,
// column parts); a version-2 reader would ignore those fields and misread such a plan, so it is
// told to rebuild instead.
// 4: cascade attention (Plan::cascades, StepKind "cascade" launches, the cascade runtime inputs);
// a version-3 runtime would run no cascade steps but a version-3 plan lacks the launches a
// version-4 runtime takes for decode steps with a shared prefix, so either is told to rebuild.
inline constexpr uint32_t kPlanFormatVersion = 4;
inline constexpr uint64_t kPlanAlignment = 256;

/// One blob to write: a name for messages and look-ups ("<key>.cubin", "weight:embed") and its
/// bytes. Plan fields refer to blobs by their index in the list given to write_plan.
struct PlanBlob {
  std::string name;
  std::string bytes;
};

/// The file's bytes for `plan` and `blobs` (plan.format_version is written as kPlanFormatVersion).
std::string serialize_plan(const Plan& plan, const std::vector<PlanBlob>& blobs);
/// serialize_plan written to `path` through a temporary file + rename.
absl::Status write_plan(const std::string& path, const Plan& plan,
                        const std::vector<PlanBlob>& blobs);

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

/// A loaded, validated plan: the typed Plan, and the file's bytes that its blobs live in.
struct LoadedPlan {
  Plan plan;
  std::string bytes;
  std::vector<BlobRecord> blobs;
  uint64_t blob_base = 0;  ///< file offset of the blob region

  /// The bytes of blob `index` (validated at load); empty for an index out of range.
  std::string_view blob(int index) const;
  /// Index of the blob named `name`, or -1.
  int find_blob(std::string_view name) const;
};

/// Validates `bytes` as a plan: magic, version, manifest length and checksum, every manifest
/// field (typed), every blob's offset/size against the file and each blob's xxh3, every blob
/// index the plan holds, arch / NVRTC against `options`, and the referenced weight files. Each
/// error says what is wrong and how to fix it.
absl::StatusOr<LoadedPlan> parse_plan(std::string bytes, const PlanLoadOptions& options);
/// parse_plan of the file at `path`.
absl::StatusOr<LoadedPlan> read_plan(const std::string& path, PlanLoadOptions options = {});

/// Checks the weight files `plan` references (packed weights are covered by the blob checksums):
/// each file exists and holds the recorded byte range, and with kChecksum its bytes still hash to
/// the recorded xxh3. Errors name the weight and file and say how to recompile.
absl::Status check_plan_weights(const Plan& plan, WeightCheck check);

/// xxh3 of [offset, offset + size) of a file, read in chunks (for weight references).
absl::StatusOr<uint64_t> hash_file_range(const std::string& path, uint64_t offset, uint64_t size);

}  // namespace kiln
