// libFuzzer target: plan files through plan/plan_file.h's parse_plan. The first byte picks the
// mode: odd = the rest is a whole .kplan; even = the rest is a manifest's JSON text, read by the
// typed manifest reader (plan/plan_json.h) and, when it reads, written back with blobs of the
// sizes it names and parsed again — so mutations reach every field check behind the container's
// checksum (a fuzzer cannot forge xxh3), and a manifest the reader accepts must round-trip.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "plan/plan_file.h"
#include "plan/plan_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  kiln::PlanLoadOptions options;
  options.weights = kiln::WeightCheck::kNone;  // never touch files the input names
  if (data[0] % 2 == 1) {
    absl::StatusOr<kiln::LoadedPlan> plan = kiln::parse_plan(std::move(rest), options);
    if (plan.ok()) {
      for (size_t i = 0; i < plan->blobs.size(); ++i) (void)plan->blob(static_cast<int>(i));
    }
    return 0;
  }
  nlohmann::json json = nlohmann::json::parse(rest, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return 0;
  absl::StatusOr<kiln::Manifest> manifest = kiln::manifest_from_json(json);
  if (!manifest.ok()) return 0;
  std::vector<kiln::PlanBlob> blobs;
  for (const kiln::BlobRecord& b : manifest->blobs) {
    if (b.size > 4096) return 0;  // keep inputs small; sizes are checked by parse_plan anyway
    blobs.push_back({b.name, std::string(b.size, 'b')});
  }
  // Blob indices in the plan must name blobs that exist; parse_plan refuses the rest cleanly.
  absl::StatusOr<kiln::LoadedPlan> again =
      kiln::parse_plan(kiln::serialize_plan(manifest->plan, blobs), options);
  (void)again;
  return 0;
}
