// libFuzzer target: a safetensors file through the reader and the f32/bf16 converters.
#include <cstdint>

#include "fuzz/fuzz_input_file.h"
#include "models/safetensors.h"
#include "models/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = kiln::fuzz::write_input_file(data, size, ".safetensors");
  absl::StatusOr<std::unique_ptr<kiln::SafetensorsFile>> file = kiln::SafetensorsFile::open(path);
  if (!file.ok()) return 0;
  for (const kiln::SafetensorsTensorInfo& t : (*file)->tensors()) {
    kiln::Weight w{
        .name = t.name, .dtype = t.dtype, .shape = t.shape, .bytes = (*file)->tensor_bytes(t)};
    if (w.elements() > (1 << 16)) continue;
    std::vector<float> f32(static_cast<size_t>(w.elements()));
    (void)kiln::to_f32(w, absl::MakeSpan(f32));
    std::vector<uint16_t> bf16(static_cast<size_t>(w.elements()));
    (void)kiln::to_bf16(w, absl::MakeSpan(bf16));
  }
  return 0;
}
