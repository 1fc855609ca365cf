// The plan's JSON form (the .kplan manifest): the only place a Plan meets JSON. Writing is total;
// reading checks every field's presence and type and names the field in its error
// ("manifest.kernels[3].params[1].type: expected one of ptr, i32, i64, f32, got \"int\""), so no
// JSON library exception ever leaves this file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "plan/plan.h"

namespace kiln {

/// One entry of the manifest's blob table (filled by plan/plan_file.h's writer). `offset` is
/// relative to the file's blob region.
struct BlobRecord {
  std::string name;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint64_t xxh3 = 0;
  bool operator==(const BlobRecord&) const = default;
};

/// The manifest: the typed plan and the container's blob table.
struct Manifest {
  Plan plan;
  std::vector<BlobRecord> blobs;
};

nlohmann::json manifest_to_json(const Plan& plan, const std::vector<BlobRecord>& blobs);
/// Reads a manifest; errors name the field, rooted at "manifest".
absl::StatusOr<Manifest> manifest_from_json(const nlohmann::json& json);

/// The manifest as text. Strings that are not valid UTF-8 (a GGUF's metadata may hold any bytes)
/// are written with U+FFFD instead of throwing.
std::string dump_manifest(const nlohmann::json& json);

// Names of the plan's enums as the manifest spells them (also used by summaries and codegen).
const char* param_type_name(ParamType type);             // "ptr", "i32", "i64", "f32"
const char* launch_arg_kind_name(LaunchArg::Kind kind);  // "tensor", "int", "float", ...
const char* runtime_input_name(RuntimeInput input);      // "sampled_ids", "temperature", ...
const char* step_kind_name(StepKind kind);               // "always", "prefill", "decode"
const char* gemm_epilogue_name(GemmEpilogue epilogue);   // "none", "bias", "residual", ...
const char* kv_page_layout_name(KvPageLayout layout);    // "NHD"
const char* collective_kind_name(CollectiveKind kind);   // "all_reduce", "all_gather"
/// The epilogue named `name` (the IR's `gemm {epilogue = ...}` attribute), or nullopt.
std::optional<GemmEpilogue> parse_gemm_epilogue(std::string_view name);

}  // namespace kiln
