// libFuzzer target: plan files through parse_plan (codegen/plan_file.h; moving to plan/). The
// first byte picks the mode: odd = the rest is a whole .kplan; even = the rest is a manifest,
// wrapped by PlanWriter with valid checksums and three blobs, so that mutations reach the manifest
// checks behind the checksum (a fuzzer cannot forge xxh3).
#include <cstdint>
#include <string>

#include "codegen/plan_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  kiln::PlanLoadOptions options;
  options.weights = kiln::WeightCheck::kSize;  // stats referenced files; never reads them
  if (data[0] % 2 == 1) {
    (void)kiln::parse_plan(std::move(rest), options);
    return 0;
  }
  nlohmann::json manifest = nlohmann::json::parse(rest, nullptr, /*allow_exceptions=*/false);
  if (manifest.is_discarded() || !manifest.is_object()) return 0;
  kiln::PlanWriter writer;
  writer.add_blob("k.cubin", std::string(300, 'c'));
  writer.add_blob("k.ptx", "// ptx");
  writer.add_blob("k.cu", "extern \"C\" __global__ void k() {}");
  absl::StatusOr<kiln::LoadedPlan> plan = kiln::parse_plan(writer.serialize(manifest), options);
  if (plan.ok()) {
    for (size_t i = 0; i < plan->manifest["blobs"].size(); ++i)
      (void)plan->blob(static_cast<int>(i));
    (void)plan->find_blob("k.ptx");
  }
  return 0;
}
