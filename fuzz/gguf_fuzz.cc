// libFuzzer target: a GGUF file through the reader, the config normalizer, the GGUF tokenizer and
// the weight converters. Any crash, sanitizer report, leak or timeout is a finding.
#include <cstdint>

#include "fuzz/fuzz_input_file.h"
#include "models/gguf.h"
#include "models/model_config.h"
#include "models/tokenizer.h"
#include "models/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = kiln::fuzz::write_input_file(data, size, ".gguf");
  absl::StatusOr<std::unique_ptr<kiln::GgufFile>> gguf = kiln::GgufFile::open(path);
  if (!gguf.ok()) return 0;
  (void)kiln::model_config_from_gguf(**gguf);
  if (absl::StatusOr<kiln::Tokenizer> tok = kiln::Tokenizer::from_gguf(**gguf); tok.ok()) {
    std::vector<int32_t> ids = tok->encode("Hello, world! <|im_start|> 123 \xe2\x96\x81x");
    (void)tok->decode(ids);
  }
  absl::StatusOr<kiln::WeightSet> weights = kiln::load_gguf_weights(path);
  if (!weights.ok()) return 0;
  for (const kiln::Weight& w : weights->all()) {
    if (w.elements() > (1 << 16)) continue;  // the bytes are checked; converting is the point
    std::vector<float> out(static_cast<size_t>(w.elements()));
    (void)kiln::to_f32(w, absl::MakeSpan(out));
  }
  return 0;
}
