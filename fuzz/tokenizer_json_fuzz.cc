// libFuzzer target: tokenizer.json (and, after a NUL byte, tokenizer_config.json) through the HF
// tokenizer loader; a tokenizer it accepts encodes and decodes a fixed mixed-script text.
#include <cstdint>
#include <string_view>

#include "models/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view all(reinterpret_cast<const char*>(data), size);
  const size_t nul = all.find('\0');
  const std::string_view tokenizer = all.substr(0, nul);
  const std::string_view config = nul == std::string_view::npos ? "{}" : all.substr(nul + 1);
  absl::StatusOr<kiln::Tokenizer> tok =
      kiln::Tokenizer::from_tokenizer_json_text(tokenizer, config, "tokenizer.json");
  if (!tok.ok()) return 0;
  std::vector<int32_t> ids =
      tok->encode("Hi there,  world!\n\t\xc3\xa9\xf0\x9f\x98\x80 <|im_end|> 42");
  (void)tok->decode(ids);
  return 0;
}
